"""Names and values that never change between deployments (cheap to import: no SDKs)."""

# Entra ID audience of Azure OpenAI. A token for any other resource is refused with 401.
COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"
STORAGE_CONNECTION = "AzureWebJobsStorage"
# Azurite's published development account (the same on every machine; not a secret). The
# Functions host understands the `UseDevelopmentStorage=true` shorthand; the Python SDK does
# not, so it is expanded here to what it means.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_connection_string(blob: str, queue: str, table: str) -> str:
    """The development account's connection string for Azurite at these service URLs."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint={blob};QueueEndpoint={queue};TableEndpoint={table};"
    )


DEVELOPMENT_STORAGE = azurite_connection_string(
    *(f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}" for port in (10000, 10001, 10002))
)
