// Every role assignment of the deployment. Each is scoped to the ONE resource it is needed on
// (the OpenAI account, the second OpenAI account of the deployment pool, the storage account, App
// Insights, the jobs queue, the results and payloads containers, the producer's reply queue):
// never to the resource group or the subscription. Producers get nothing on the worker-only
// container (STAGING_CONTAINER: the retry store, staged batch jobs, manifests), nor on the account or
// blob service above it: only the worker and the person running azd up (the operator) hold a blob
// role that covers it (tests/infra checks it). Names come from guid() over scope + principal +
// role, so re-deploying is idempotent. The batch lane's custom role is the one role definition
// this deployment creates (see batchDataActions below).

@description('Storage account of the worker.')
param storageAccountName string

@description('Azure OpenAI account of the worker.')
param openAiAccountName string

@description('Second Azure OpenAI account of the deployment pool (AZURE_OPENAI_POOL, priority 2). Empty: there is none, and no role on it.')
param secondaryOpenAiAccountName string = ''

@description('GlobalBatch deployment of the batch lane on the first account (BATCH_DEPLOYMENT). Empty: no batch lane, so no batch role is defined or granted.')
param batchDeploymentName string = ''

@description('Application Insights component of the worker.')
param appInsightsName string

@description('Queue producers send jobs to.')
param jobsQueueName string

@description('Container results are written to.')
param resultsContainerName string

@description('Container producers upload claim-check job bodies to (PAYLOADS_CONTAINER).')
param payloadsContainerName string

@description('Queues a job may name as reply_to (REPLY_QUEUES_ALLOWED), created by storage.bicep.')
param replyQueueNames array

@description('Principal (object) id of the user-assigned identity of the worker.')
param appPrincipalId string

@description('Object id of the person running azd up (optional): the operator, who can enqueue jobs, read results and the worker\'s own state (status, replay, a worker run from a laptop) and call the model. Not for a producer service: use producerPrincipalId.')
param principalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
@description('Kind of principalId: User for a person, ServicePrincipal when azd runs in CI.')
param principalType string = 'User'

@description('Object id of a producer service (optional): gets ONLY send on the jobs queue, read on the results container, write on the payloads container and read + delete on its reply queue; nothing on the worker-only container.')
param producerPrincipalId string = ''

@allowed([
  'ServicePrincipal'
  'User'
  'Group'
])
@description('Kind of producerPrincipalId (a managed identity is a ServicePrincipal).')
param producerPrincipalType string = 'ServicePrincipal'

@description('Reply queue the producer follows; it gets a role only when the name is one of replyQueueNames.')
param producerReplyQueueName string

// ---- Built-in role definition ids (same in every tenant) ----

// Cognitive Services OpenAI User: call deployments (chat completions); no keys, no management.
// Granted on EACH account the worker calls: a token is accepted per resource, by that resource's
// role assignments.
var cognitiveServicesOpenAiUser = '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd'

// Storage Blob Data Owner: the Functions host takes blob leases and manages its own containers.
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'

// Storage Blob Data Contributor: read/write/delete blobs (a person inspecting results, payloads
// and the worker's state; a producer uploading claim-check bodies to the payloads container only).
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

// Storage Blob Data Reader: read blobs only (a producer fetching its results).
var storageBlobDataReader = '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'

// Storage Queue Data Contributor: the queue trigger reads, updates (releases) and deletes
// messages and writes <queue>-poison; Message Processor alone is not enough.
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'

// Storage Queue Data Message Sender: add messages only (a producer enqueueing jobs).
var storageQueueDataMessageSender = 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'

// Storage Queue Data Message Processor: peek, receive and delete messages, nothing else (a
// producer reading and clearing its reply notices; it can't send to or create queues).
var storageQueueDataMessageProcessor = '8a0f0c08-91a1-4084-bc3d-661d67233fed'

// Storage Table Data Contributor: the Functions host's diagnostics/scale tables.
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'

// Monitoring Metrics Publisher: send telemetry to App Insights with Entra auth (local auth is off).
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'

// ---- Custom role: Azure OpenAI Batch (the batch lane only) ----
//
// The batch lane uploads a JSONL file, creates a batch, polls it, downloads the output and error
// files, deletes files and may cancel a batch, all on the v1 data plane. Microsoft documents
// Cognitive Services OpenAI User for inference; nothing we rely on documents its data actions as a
// wildcard over Microsoft.CognitiveServices/accounts/OpenAI/*, so whether it covers files and
// batches is unconfirmed. Cognitive Services OpenAI Contributor covers them but grants far more
// than the batch lane needs. So, least privilege: a custom role with exactly the data actions the
// Azure OpenAI RBAC page and the batch how-to list for files and batches
// (https://learn.microsoft.com/azure/ai-foundry/openai/how-to/role-based-access-control,
// https://learn.microsoft.com/azure/foundry/openai/how-to/batch), no control-plane actions, created
// and granted only when the batch deployment exists. Defining a role needs
// Microsoft.Authorization/roleDefinitions/write (Owner or User Access Administrator; Role Based
// Access Control Administrator cannot). If the service asks for a data action not listed here, the
// batch lane sees PermissionDenied: docs/troubleshooting.md#batch-lane-permissiondenied.
var batchDataActions = [
  'Microsoft.CognitiveServices/accounts/OpenAI/files/write'
  'Microsoft.CognitiveServices/accounts/OpenAI/files/read'
  'Microsoft.CognitiveServices/accounts/OpenAI/files/delete'
  'Microsoft.CognitiveServices/accounts/OpenAI/batch-jobs/write'
  'Microsoft.CognitiveServices/accounts/OpenAI/batches/read'
  'Microsoft.CognitiveServices/accounts/OpenAI/batches/cancel/action'
]

// Azure OpenAI Batch (custom role defined below): the batchDataActions, nothing else. Its id is a
// guid() of this resource group and the account, so re-deploying updates the same definition.
var azureOpenAiBatch = guid(resourceGroup().id, openAiAccountName, 'azure-openai-batch')

resource batchRoleDefinition 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (!empty(batchDeploymentName)) {
  name: azureOpenAiBatch
  properties: {
    // Role names are unique per tenant; the account name is globally unique.
    roleName: 'Azure OpenAI Batch (${openAiAccountName})'
    description: 'Batch lane of the keyless queue worker: upload, read and delete files, create, read and cancel batches on Azure OpenAI. No inference (Cognitive Services OpenAI User), no management.'
    type: 'CustomRole'
    permissions: [
      {
        actions: []
        notActions: []
        dataActions: batchDataActions
        notDataActions: []
      }
    ]
    // The narrowest scope a custom role can be made assignable at; each assignment below is scoped
    // to the one OpenAI account.
    assignableScopes: [
      resourceGroup().id
    ]
  }
}

// ---- The resources roles are scoped to ----

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource jobsQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: jobsQueueName
}

// Referenced only by the producer's reply role, which is deployed only when the name is one of
// replyQueueNames, i.e. a queue storage.bicep creates.
resource producerReplyQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: producerReplyQueueName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource resultsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: resultsContainerName
}

resource payloadsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: payloadsContainerName
}

resource openAi 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = {
  name: openAiAccountName
}

// The pool's second account. Its roles are deployed only when secondaryOpenAiAccountName is set;
// the fallback name keeps the (then unused) reference well-formed when it is not.
resource secondaryOpenAi 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = {
  name: empty(secondaryOpenAiAccountName) ? openAiAccountName : secondaryOpenAiAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

// ---- The worker's identity ----

resource appOpenAiUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(openAi.id, appPrincipalId, cognitiveServicesOpenAiUser)
  scope: openAi
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', cognitiveServicesOpenAiUser)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Worker: call the model with an Entra token.'
  }
}

resource appSecondaryOpenAiUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(secondaryOpenAiAccountName)) {
  name: guid(secondaryOpenAi.id, appPrincipalId, cognitiveServicesOpenAiUser)
  scope: secondaryOpenAi
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', cognitiveServicesOpenAiUser)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Worker: call the deployment pool\'s second model deployment with an Entra token.'
  }
}

resource appBatch 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(batchDeploymentName)) {
  name: guid(openAi.id, appPrincipalId, azureOpenAiBatch)
  scope: openAi
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', azureOpenAiBatch)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Worker: batch lane files and batches.'
  }
  dependsOn: [
    batchRoleDefinition
  ]
}

resource appBlobDataOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Worker: host storage (leases), deployment package, results and payload blobs, its own state (retry store, staged batch jobs, manifests).'
  }
}

resource appQueueDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Worker: queue trigger, poison queue, re-enqueue of throttled jobs, reply queues.'
  }
}

resource appTableDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Worker: Functions host tables.'
  }
}

resource appMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, appPrincipalId, monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Worker: send telemetry with Entra auth.'
  }
}

// ---- The person running azd up (optional) ----

resource userOpenAiUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(principalId)) {
  name: guid(openAi.id, principalId, cognitiveServicesOpenAiUser)
  scope: openAi
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', cognitiveServicesOpenAiUser)
    principalId: principalId
    principalType: principalType
    description: 'Developer: call the model from a laptop.'
  }
}

resource userSecondaryOpenAiUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if ((!empty(principalId)) && (!empty(secondaryOpenAiAccountName))) {
  name: guid(secondaryOpenAi.id, principalId, cognitiveServicesOpenAiUser)
  scope: secondaryOpenAi
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', cognitiveServicesOpenAiUser)
    principalId: principalId
    principalType: principalType
    description: 'Developer: call the pool\'s second deployment from a laptop.'
  }
}

resource userBatch 'Microsoft.Authorization/roleAssignments@2022-04-01' = if ((!empty(principalId)) && (!empty(batchDeploymentName))) {
  name: guid(openAi.id, principalId, azureOpenAiBatch)
  scope: openAi
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', azureOpenAiBatch)
    principalId: principalId
    principalType: principalType
    description: 'Developer: run the batch lane from a laptop.'
  }
  dependsOn: [
    batchRoleDefinition
  ]
}

resource userQueueDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(principalId)) {
  name: guid(storage.id, principalId, storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
    principalId: principalId
    principalType: principalType
    description: 'Developer: enqueue jobs, peek and clear queues.'
  }
}

resource userBlobDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(principalId)) {
  name: guid(storage.id, principalId, storageBlobDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: principalId
    principalType: principalType
    description: 'Developer: read results and the worker\'s own state, write claim-check payloads.'
  }
}

// ---- A producer service (optional): least privilege, on single queue / container ----

resource producerQueueSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(producerPrincipalId)) {
  name: guid(jobsQueue.id, producerPrincipalId, storageQueueDataMessageSender)
  scope: jobsQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataMessageSender)
    principalId: producerPrincipalId
    principalType: producerPrincipalType
    description: 'Producer: send jobs to this queue only.'
  }
}

resource producerResultsReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(producerPrincipalId)) {
  name: guid(resultsContainer.id, producerPrincipalId, storageBlobDataReader)
  scope: resultsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataReader)
    principalId: producerPrincipalId
    principalType: producerPrincipalType
    description: 'Producer: read results from this container only.'
  }
}

resource producerPayloadsWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(producerPrincipalId)) {
  name: guid(payloadsContainer.id, producerPrincipalId, storageBlobDataContributor)
  scope: payloadsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: producerPrincipalId
    principalType: producerPrincipalType
    description: 'Producer: upload claim-check job bodies to this container only.'
  }
}

// contains(): a queue the worker never replies to needs no role, and a name storage.bicep did
// not create is never used as a scope. `(!empty(...))` in parentheses: pycep (checkov,
// tests/infra) reads a bare leading `!` as negating the whole `&&`.
resource producerReplyProcessor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if ((!empty(producerPrincipalId)) && contains(replyQueueNames, producerReplyQueueName)) {
  name: guid(producerReplyQueue.id, producerPrincipalId, storageQueueDataMessageProcessor)
  scope: producerReplyQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataMessageProcessor)
    principalId: producerPrincipalId
    principalType: producerPrincipalType
    description: 'Producer: read and delete reply notices on this queue only.'
  }
}
