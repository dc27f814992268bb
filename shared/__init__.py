"""The keyless Azure OpenAI queue worker: everything the Function App runs lives here."""
