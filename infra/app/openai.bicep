// Azure OpenAI with key auth disabled: the only way in is an Entra token, so the account has a
// custom subdomain (Entra auth needs https://<subdomain>.openai.azure.com, not the regional
// endpoint) and callers need the Cognitive Services OpenAI User role (rbac.bicep).

@description('Name of the Azure OpenAI account.')
param name string

@description('Custom subdomain: the endpoint becomes https://<customSubDomainName>.openai.azure.com. Globally unique.')
param customSubDomainName string

@description('Region of the account. The model, version and SKU below must be offered (and have quota) there.')
param location string

@description('Tags for the account.')
param tags object = {}

@description('Deployment name the worker calls (app settings AZURE_OPENAI_DEPLOYMENT and AZURE_OPENAI_ALLOWED_DEPLOYMENTS).')
param deploymentName string

@description('Model to deploy.')
param modelName string

@description('Model version to deploy.')
param modelVersion string

@description('Deployment SKU: GlobalStandard, DataZoneStandard or Standard.')
param skuName string

@minValue(1)
@description('Deployment capacity in units of 1,000 tokens per minute (TPM): 30 = 30,000 TPM.')
param capacity int

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' = {
  // checkov:skip=CKV_AZURE_134: the Flex Consumption app has no VNet in this template, so it reaches Azure OpenAI over the public endpoint; key auth is off, so only Entra tokens with the OpenAI User role get in.
  // checkov:skip=CKV_AZURE_238: the account calls nothing on its own behalf (no customer-managed key, no data sources), so an identity of its own would be an unused principal.
  name: name
  location: location
  tags: tags
  kind: 'OpenAI'
  sku: {
    name: 'S0'
  }
  properties: {
    customSubDomainName: customSubDomainName
    // No API keys: a leaked key can't be used, a token from the worker's identity is needed.
    disableLocalAuth: true
    // The Flex Consumption app has no VNet here, so it calls the public endpoint (Entra-only).
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
    }
  }
}

resource deployment 'Microsoft.CognitiveServices/accounts/deployments@2024-10-01' = {
  parent: account
  name: deploymentName
  sku: {
    name: skuName
    capacity: capacity
  }
  properties: {
    model: {
      format: 'OpenAI'
      name: modelName
      version: modelVersion
    }
    // Stay on the pinned version until it is retired, so answers don't change under a release.
    versionUpgradeOption: 'OnceCurrentVersionExpired'
  }
}

output name string = account.name
output id string = account.id
// https://<customSubDomainName>.openai.azure.com/ (the worker strips the trailing slash).
output endpoint string = account.properties.endpoint
output deploymentName string = deployment.name
