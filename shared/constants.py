"""Names and values that never change between deployments (cheap to import: no SDKs)."""

# Entra ID audience of Azure OpenAI. A token for any other resource is refused with 401.
COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"
STORAGE_CONNECTION = "AzureWebJobsStorage"
# Azurite's published development account (the same on every machine; not a secret). The
# Functions host understands the `UseDevelopmentStorage=true` shorthand; the Python SDK does
# not, so it is expanded here to what it means.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
DEVELOPMENT_STORAGE = (
    f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
    f"BlobEndpoint=http://127.0.0.1:10000/{AZURITE_ACCOUNT};QueueEndpoint=http://127.0.0.1:10001/{AZURITE_ACCOUNT};"
    f"TableEndpoint=http://127.0.0.1:10002/{AZURITE_ACCOUNT};"
)
