// The ONE identity of the worker. A user-assigned identity (not system-assigned) exists before
// the Function App does, so its role assignments can be made, and start propagating, before
// the app's first start; and it survives the app being deleted and re-created.
// The Function App uses it for everything: host storage, the deployment package, the jobs
// queue and result blobs, Azure OpenAI and Application Insights.

@description('Name of the user-assigned managed identity.')
param name string

@description('Region of the identity.')
param location string

@description('Tags for the identity.')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
// The client id is not a secret: it only says WHICH identity to ask a token for.
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
