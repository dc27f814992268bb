// One storage account for everything the worker touches: the Functions host's own state
// (leases, timers, diagnostics tables), the Flex Consumption deployment package, the jobs
// queue and its poison queue, reply queues, result blobs, claim-check payload blobs and the
// worker's own state (retry store, the batch lane's staged jobs and manifests).
// Shared keys are OFF: every caller (host, worker, producers, people) uses Entra ID.
// With vnetEnabled the public endpoint is off too: the app reaches blob, queue and table through
// private endpoints (private-endpoints.bicep), anyone else from inside (or peered with) the VNet.

@description('Name of the storage account (3-24 lower-case letters and digits).')
@minLength(3)
@maxLength(24)
param name string

@description('Region of the storage account.')
param location string

@description('Tags for the storage account.')
param tags object = {}

@description('Queue the worker listens on (app setting JOBS_QUEUE). <name>-poison is created beside it.')
param jobsQueueName string

@description('Queues a job may name as reply_to (app setting REPLY_QUEUES_ALLOWED).')
param replyQueueNames array

@description('Container for results, one <id>.json per job (app setting RESULTS_CONTAINER).')
param resultsContainerName string

@description('Container for job bodies too large for a queue message (app setting PAYLOADS_CONTAINER).')
param payloadsContainerName string

@description('Worker-only container: retry state, staged batch jobs and batch manifests; producers get no role on it (app setting STAGING_CONTAINER).')
param stagingContainerName string

@description('Container Flex Consumption deploys the app package from (functionAppConfig.deployment).')
param deploymentContainerName string

@description('Private networking: public network access off and the firewall denying by default; callers come through the private endpoints.')
param vnetEnabled bool = false

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: the firewall denies by default exactly when vnetEnabled (private endpoints); the default (false) keeps the public endpoint, Entra-only (shared keys off), for producers and azd outside a VNet.
  // checkov:skip=CKV_AZURE_59: same switch: publicNetworkAccess is Disabled when vnetEnabled, Enabled (Entra-only) by default. checkov cannot evaluate the ternary; tests/infra checks both values.
  // checkov:skip=CKV_AZURE_206: LRS on purpose: queue messages and results are short-lived working data a producer can resubmit; GRS doubles cost without protecting a job in flight.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    // Keyless: no account keys, no SAS signed with them, no connection strings.
    allowSharedKeyAccess: false
    // The portal and tools default to Entra auth too.
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowCrossTenantReplication: false
    // vnetEnabled: nothing from a public network, not even trusted Azure services (bypass None,
    // as the azd Flex samples do; nothing here needs that exception, whatever checkov's
    // CKV_AZURE_36, which cannot evaluate the ternary, would prefer). Off: public, Entra-only.
    publicNetworkAccess: vnetEnabled ? 'Disabled' : 'Enabled'
    networkAcls: {
      defaultAction: vnetEnabled ? 'Deny' : 'Allow'
      bypass: vnetEnabled ? 'None' : 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    // A deleted result or payload can be recovered for a week.
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

// The worker's trigger queue. Producers get send-only rights on THIS queue (rbac.bicep).
resource jobsQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: jobsQueueName
}

// Where the Functions host moves a message after maxDequeueCount failures. The host would
// create it on first use; creating it here lets people and alerts find it from day one.
resource poisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: '${jobsQueueName}-poison'
}

// Reply notices. A producer gets read + delete on the ONE it follows (rbac.bicep).
resource replyQueues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for replyQueueName in replyQueueNames: {
  parent: queueService
  name: replyQueueName
}]

// Results: one <id>.json per job. Consumers get read-only rights on THIS container.
resource resultsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: resultsContainerName
  properties: {
    publicAccess: 'None'
  }
}

// Claim check: a job too big for a 64 KB queue message is stored here and the message
// carries only its blob name. Producers get write rights on THIS container (rbac.bicep).
resource payloadsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: payloadsContainerName
  properties: {
    publicAccess: 'None'
  }
}

// The worker's own state, worker-only: the retry store (retries/<id>.json, a re-enqueued job's whole
// prompt and its one-time token), the batch lane's staged jobs (jobs/<id>.json) and its manifests
// (batches/<id>.json). Only the worker's identity and the person running azd up (the operator) hold a
// role that covers it, their blob roles on the account; producers get none on it, nor on the account
// or blob service above it (rbac.bicep; tests/infra checks it). Created whether or not a batch
// deployment exists: the retry store is always used.
resource stagingContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: stagingContainerName
  properties: {
    publicAccess: 'None'
  }
}

// What the worker leaves behind is deleted by these rules (it deletes each blob itself once its job is
// settled; a crash or a failed delete leaves one). Each keeps a blob longer than the code may still
// need it, counted from its last write (tests/infra checks each against the deployed settings):
// - payloads and retries/: a queue message (a claim-check reference, a re-enqueued pointer) can be
//   delivered until its time-to-live runs out, 7 days after it was sent (Azure's default, which every
//   sender keeps), and a job is re-enqueued for at most RETRY_MAX_SECONDS (2 h): 8 days covers both.
//   A shorter rule would let a pointer still in the queue find no state, and its job end unanswered.
// - jobs/ and batches/: a staged job or a manifest is rewritten at each step, but not while its batch
//   runs (the 24 h window) and its request file can still be read (14 days, the expiry the submitter
//   sets): 21 days leaves a week more for a collector that was stopped.
// No prompt text stays longer, but for soft delete (deleteRetentionPolicy above: 7 days more).
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'expire-claim-check-payloads'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [ 'blockBlob' ]
              prefixMatch: [ '${payloadsContainerName}/' ]
            }
            actions: {
              baseBlob: {
                delete: { daysAfterModificationGreaterThan: 8 }
              }
            }
          }
        }
        {
          name: 'expire-retry-state'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [ 'blockBlob' ]
              prefixMatch: [ '${stagingContainerName}/retries/' ]
            }
            actions: {
              baseBlob: {
                delete: { daysAfterModificationGreaterThan: 8 }
              }
            }
          }
        }
        {
          name: 'expire-staged-batch-jobs'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [ 'blockBlob' ]
              prefixMatch: [ '${stagingContainerName}/jobs/' ]
            }
            actions: {
              baseBlob: {
                delete: { daysAfterModificationGreaterThan: 21 }
              }
            }
          }
        }
        {
          name: 'expire-batch-manifests'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [ 'blockBlob' ]
              prefixMatch: [ '${stagingContainerName}/batches/' ]
            }
            actions: {
              baseBlob: {
                delete: { daysAfterModificationGreaterThan: 21 }
              }
            }
          }
        }
      ]
    }
  }
}

// Flex Consumption runs the app from a zip in this container (azd deploy uploads it).
resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

output name string = storage.name
output id string = storage.id
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output tableEndpoint string = storage.properties.primaryEndpoints.table
output jobsQueueName string = jobsQueue.name
output resultsContainerName string = resultsContainer.name
output payloadsContainerName string = payloadsContainer.name
output stagingContainerName string = stagingContainer.name
