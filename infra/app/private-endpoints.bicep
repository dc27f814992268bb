// Private endpoints (resources.bicep deploys this only when vnetEnabled), all in the
// private-endpoints subnet of network.bicep, each registering its address in the private DNS
// zone(s) of its sub-resource through a zone group:
// - storage blob, queue and table: the queue trigger needs queue; the Functions host needs blob
//   (leases, the deployment package) and table; the worker needs queue and blob;
// - Azure OpenAI (group `account`): both the openai and the cognitiveservices zones; the
//   deployment pool's second account (another region) gets an endpoint of its own here, in the
//   VNet's region, registered in the same two zones (a private endpoint may connect to a resource
//   in another region).
// Storage and Azure OpenAI refuse public traffic while vnetEnabled (storage.bicep, openai.bicep).
// The Function App itself gets no inbound private endpoint: the worker has no HTTP triggers, and
// azd deploy publishes over its public scm endpoint (an inbound endpoint is reported to hang
// Flex deployments at Kudu-RemoveWorkersStep, Azure/Azure-Functions#2635).

@description('Region of the private endpoints (the region of the VNet).')
param location string

@description('Tags for every resource.')
param tags object = {}

@description('Storage account behind the blob, queue and table endpoints.')
param storageAccountName string

@description('Azure OpenAI account behind the account endpoint.')
param openAiAccountName string

@description('The deployment pool\'s second Azure OpenAI account. Empty: there is none, and no endpoint for it.')
param secondaryOpenAiAccountName string = ''

@description('Resource id of the subnet the endpoints get their addresses from.')
param subnetId string

@description('Resource id of the privatelink.blob zone.')
param blobZoneId string

@description('Resource id of the privatelink.queue zone.')
param queueZoneId string

@description('Resource id of the privatelink.table zone.')
param tableZoneId string

@description('Resource id of the privatelink.openai.azure.com zone.')
param openAiZoneId string

@description('Resource id of the privatelink.cognitiveservices.azure.com zone.')
param cognitiveServicesZoneId string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource openAi 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = {
  name: openAiAccountName
}

// Referenced only by the second account's endpoint, deployed only when it exists; the fallback
// name keeps the reference well-formed otherwise.
resource secondaryOpenAi 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = {
  name: empty(secondaryOpenAiAccountName) ? openAiAccountName : secondaryOpenAiAccountName
}

// ---- Storage: blob ----

resource blobEndpoint 'Microsoft.Network/privateEndpoints@2024-05-01' = {
  name: 'pe-${storageAccountName}-blob'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: subnetId
    }
    privateLinkServiceConnections: [
      {
        name: 'blob'
        properties: {
          privateLinkServiceId: storage.id
          groupIds: [
            'blob'
          ]
        }
      }
    ]
  }
}

resource blobZoneGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = {
  parent: blobEndpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: 'blob'
        properties: {
          privateDnsZoneId: blobZoneId
        }
      }
    ]
  }
}

// ---- Storage: queue ----

resource queueEndpoint 'Microsoft.Network/privateEndpoints@2024-05-01' = {
  name: 'pe-${storageAccountName}-queue'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: subnetId
    }
    privateLinkServiceConnections: [
      {
        name: 'queue'
        properties: {
          privateLinkServiceId: storage.id
          groupIds: [
            'queue'
          ]
        }
      }
    ]
  }
}

resource queueZoneGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = {
  parent: queueEndpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: 'queue'
        properties: {
          privateDnsZoneId: queueZoneId
        }
      }
    ]
  }
}

// ---- Storage: table ----

resource tableEndpoint 'Microsoft.Network/privateEndpoints@2024-05-01' = {
  name: 'pe-${storageAccountName}-table'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: subnetId
    }
    privateLinkServiceConnections: [
      {
        name: 'table'
        properties: {
          privateLinkServiceId: storage.id
          groupIds: [
            'table'
          ]
        }
      }
    ]
  }
}

resource tableZoneGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = {
  parent: tableEndpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: 'table'
        properties: {
          privateDnsZoneId: tableZoneId
        }
      }
    ]
  }
}

// ---- Azure OpenAI ----

resource openAiEndpoint 'Microsoft.Network/privateEndpoints@2024-05-01' = {
  name: 'pe-${openAiAccountName}-account'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: subnetId
    }
    privateLinkServiceConnections: [
      {
        name: 'account'
        properties: {
          privateLinkServiceId: openAi.id
          groupIds: [
            'account'
          ]
        }
      }
    ]
  }
}

resource openAiZoneGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = {
  parent: openAiEndpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: 'openai'
        properties: {
          privateDnsZoneId: openAiZoneId
        }
      }
      {
        name: 'cognitiveservices'
        properties: {
          privateDnsZoneId: cognitiveServicesZoneId
        }
      }
    ]
  }
}

// ---- Azure OpenAI: the deployment pool's second account (optional) ----

resource secondaryOpenAiEndpoint 'Microsoft.Network/privateEndpoints@2024-05-01' = if (!empty(secondaryOpenAiAccountName)) {
  name: 'pe-${secondaryOpenAiAccountName}-account'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: subnetId
    }
    privateLinkServiceConnections: [
      {
        name: 'account'
        properties: {
          privateLinkServiceId: secondaryOpenAi.id
          groupIds: [
            'account'
          ]
        }
      }
    ]
  }
}

resource secondaryOpenAiZoneGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = if (!empty(secondaryOpenAiAccountName)) {
  parent: secondaryOpenAiEndpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: 'openai'
        properties: {
          privateDnsZoneId: openAiZoneId
        }
      }
      {
        name: 'cognitiveservices'
        properties: {
          privateDnsZoneId: cognitiveServicesZoneId
        }
      }
    ]
  }
}

output blobEndpointId string = blobEndpoint.id
output queueEndpointId string = queueEndpoint.id
output tableEndpointId string = tableEndpoint.id
output openAiEndpointId string = openAiEndpoint.id
