// Private networking (resources.bicep deploys this only when vnetEnabled): one VNet with two
// subnets, and the private DNS zones the private endpoints (private-endpoints.bicep) register in.
// - app: the Flex Consumption app's VNet integration (outbound). Flex needs the subnet delegated
//   to Microsoft.App/environments (not Microsoft.Web/serverFarms as on other plans), and the
//   Microsoft.App resource provider registered in the subscription.
// - private-endpoints: one private endpoint each for storage blob, queue and table and for Azure
//   OpenAI. Nothing is delegated here.
// Each zone is linked to the VNet, so the app resolves <account>.queue.core.windows.net (and the
// others) to the private endpoint's address. A producer in another VNet needs these zones linked
// to its VNet too (peering), or endpoints and zones of its own: docs/deploy.md#private-networking.
// Subnets are declared inline in the VNet: separate subnet resources would be deleted by the next
// deployment of a VNet that does not list them.

@description('Name of the virtual network.')
param name string

@description('Region of the virtual network (the private DNS zones are global).')
param location string

@description('Tags for every resource.')
param tags object = {}

@description('Address space of the VNet. To peer it with another VNet, the two address spaces must not overlap.')
param addressPrefix string = '10.80.0.0/16'

@description('Subnet of the VNet integration of the Function App (delegated to Microsoft.App/environments).')
param appSubnetPrefix string = '10.80.0.0/24'

@description('Subnet of the private endpoints.')
param privateEndpointSubnetPrefix string = '10.80.1.0/24'

var appSubnetName = 'snet-app'
var privateEndpointSubnetName = 'snet-private-endpoints'
// core.windows.net in the public cloud. The OpenAI zones below are the public cloud's.
var storageSuffix = environment().suffixes.storage

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: appSubnetName
        properties: {
          addressPrefix: appSubnetPrefix
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
        }
      }
      {
        name: privateEndpointSubnetName
        properties: {
          addressPrefix: privateEndpointSubnetPrefix
          privateEndpointNetworkPolicies: 'Disabled'
        }
      }
    ]
  }
}

// The subnets above, by name, for their ids (declared inline, so nothing new is created here).
resource appSubnet 'Microsoft.Network/virtualNetworks/subnets@2024-05-01' existing = {
  parent: vnet
  name: appSubnetName
}

resource privateEndpointSubnet 'Microsoft.Network/virtualNetworks/subnets@2024-05-01' existing = {
  parent: vnet
  name: privateEndpointSubnetName
}

// ---- Private DNS zones, one per private-link sub-resource, each linked to the VNet ----

resource blobZone 'Microsoft.Network/privateDnsZones@2024-06-01' = {
  name: 'privatelink.blob.${storageSuffix}'
  location: 'global'
  tags: tags
}

resource blobZoneLink 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = {
  parent: blobZone
  name: '${name}-link'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}

resource queueZone 'Microsoft.Network/privateDnsZones@2024-06-01' = {
  name: 'privatelink.queue.${storageSuffix}'
  location: 'global'
  tags: tags
}

resource queueZoneLink 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = {
  parent: queueZone
  name: '${name}-link'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}

resource tableZone 'Microsoft.Network/privateDnsZones@2024-06-01' = {
  name: 'privatelink.table.${storageSuffix}'
  location: 'global'
  tags: tags
}

resource tableZoneLink 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = {
  parent: tableZone
  name: '${name}-link'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}

// Azure OpenAI's private endpoint (group `account`) has records in both zones:
// <name>.openai.azure.com and <name>.cognitiveservices.azure.com.
resource openAiZone 'Microsoft.Network/privateDnsZones@2024-06-01' = {
  name: 'privatelink.openai.azure.com'
  location: 'global'
  tags: tags
}

resource openAiZoneLink 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = {
  parent: openAiZone
  name: '${name}-link'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}

resource cognitiveServicesZone 'Microsoft.Network/privateDnsZones@2024-06-01' = {
  name: 'privatelink.cognitiveservices.azure.com'
  location: 'global'
  tags: tags
}

resource cognitiveServicesZoneLink 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = {
  parent: cognitiveServicesZone
  name: '${name}-link'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}

output vnetId string = vnet.id
output vnetName string = vnet.name
output appSubnetId string = appSubnet.id
output privateEndpointSubnetId string = privateEndpointSubnet.id
output blobZoneId string = blobZone.id
output queueZoneId string = queueZone.id
output tableZoneId string = tableZone.id
output openAiZoneId string = openAiZone.id
output cognitiveServicesZoneId string = cognitiveServicesZone.id
