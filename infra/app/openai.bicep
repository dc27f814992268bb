// Azure OpenAI with key auth disabled: the only way in is an Entra token, so the account has a
// custom subdomain (Entra auth needs https://<subdomain>.openai.azure.com, not the regional
// endpoint) and callers need the Cognitive Services OpenAI User role (rbac.bicep).
// resources.bicep deploys this file once for the worker's account and, when
// secondaryOpenAiLocation is set, once more for the deployment pool's second account (same model
// deployment, another region). The batch lane's GlobalBatch deployment (batchDeploymentName) is
// only ever on the first.

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

@minLength(1)
@description('Model version to deploy: always explicit (an omitted version means whatever the service default is that day).')
param modelVersion string

@description('Deployment SKU: GlobalStandard, DataZoneStandard or Standard.')
param skuName string

@minValue(1)
@description('Deployment capacity in units of 1,000 tokens per minute (TPM): 50 = 50,000 TPM.')
param capacity int

@description('Name of a GlobalBatch deployment for the batch lane (app setting BATCH_DEPLOYMENT). Empty: none.')
param batchDeploymentName string = ''

@description('Model of the GlobalBatch deployment: one the batch model matrix lists (e.g. gpt-5.4-mini, gpt-4.1-mini). Used only with batchDeploymentName.')
param batchModelName string = ''

@description('Version of the batch model, explicit as for the deployment above. Used only with batchDeploymentName.')
param batchModelVersion string = ''

@minValue(1)
@description('Capacity of the GlobalBatch deployment, counted against the separate OpenAI.GlobalBatch.<model> quota of the region (enqueued tokens).')
param batchCapacity int = 1

@description('Private networking: public network access off and network ACLs denying by default; the app comes through the private endpoint (group account).')
param vnetEnabled bool = false

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' = {
  // checkov:skip=CKV_AZURE_134: publicNetworkAccess is Disabled when vnetEnabled (private endpoint); by default the app calls the public endpoint, where key auth is off, so only Entra tokens with the OpenAI User role get in. tests/infra checks both values.
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
    // Public endpoint (Entra-only) by default; with vnetEnabled only the private endpoint answers.
    publicNetworkAccess: vnetEnabled ? 'Disabled' : 'Enabled'
    networkAcls: {
      defaultAction: vnetEnabled ? 'Deny' : 'Allow'
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
    // Deployed at the version above, then moved by the service to each new default version of
    // the model within ~2 weeks of its release, not at retirement (OnceCurrentVersionExpired) or
    // never (NoAutoUpgrade: stops working when the version retires). Answers can change with the
    // version; provisioned SKUs are never upgraded. docs/deploy.md#model-choice
    versionUpgradeOption: 'OnceNewDefaultVersionAvailable'
  }
}

// The batch lane (BATCH_DEPLOYMENT): half the price of GlobalStandard, answers within 24 hours, and a
// quota of its own (enqueued tokens, held until a batch ends), so it never competes with the live
// deployment above for tokens per minute. SKU GlobalBatch (the az CLI spells it globalbatch); the
// model must be one the batch model matrix lists. No versionUpgradeOption: auto-upgrade applies to
// GlobalStandard, DataZoneStandard and Standard only
// (https://learn.microsoft.com/azure/foundry/openai/concepts/model-retirements). dependsOn: one
// account takes one deployment change at a time. docs/deploy.md#batch-lane
resource batchDeployment 'Microsoft.CognitiveServices/accounts/deployments@2024-10-01' = if (!empty(batchDeploymentName)) {
  parent: account
  name: batchDeploymentName
  sku: {
    name: 'GlobalBatch'
    capacity: batchCapacity
  }
  properties: {
    model: {
      format: 'OpenAI'
      name: batchModelName
      version: batchModelVersion
    }
  }
  dependsOn: [
    deployment
  ]
}

output name string = account.name
output id string = account.id
// https://<customSubDomainName>.openai.azure.com/ (the worker strips the trailing slash).
output endpoint string = account.properties.endpoint
output deploymentName string = deployment.name
// Empty when there is no batch deployment.
output batchDeploymentName string = empty(batchDeploymentName) ? '' : batchDeployment.name
