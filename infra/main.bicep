// Keyless queue worker, subscription-scoped entry point (azd up, az deployment sub create):
// creates resource group rg-<environmentName> and deploys resources.bicep into it. Everything
// else (what is created, which roles, which app settings) is in resources.bicep, which is also
// the `az deployment group create` entry point for people with rights on one resource group.
//
// azd up: azure.yaml + main.parameters.json feed environmentName, location and principalId.
// Without azd: az deployment sub create (see docs/deploy.md).
targetScope = 'subscription'

// The parameters of resources.bicep, verbatim (azd and `az deployment sub create` only see
// these), each passed through unchanged below; tests/infra fails when the two files drift apart.
// Only location differs: here it is required (azd asks for it), there it defaults to the
// region of the resource group.

// ---- Environment ----

@minLength(1)
@maxLength(64)
@description('Name of the environment (azd: AZURE_ENV_NAME). Seeds the unique suffix of the resource names and tags every resource; main.bicep also names the resource group rg-<name> after it.')
param environmentName string

@minLength(1)
@description('Region of every resource (azd: AZURE_LOCATION). It must offer the Flex Consumption plan.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the person running azd up (azd: AZURE_PRINCIPAL_ID). Optional: gets Cognitive Services OpenAI User on the OpenAI account and Storage Queue Data Contributor + Storage Blob Data Contributor on the storage account, to enqueue jobs, read results and inspect the worker\'s own state from a laptop (the operator; a producer service is producerPrincipalId).')
param principalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
@description('Kind of principalId: User for a person; ServicePrincipal when azd runs in CI.')
param principalType string = 'User'

@description('Object id of a service that submits jobs (optional). Gets ONLY Storage Queue Data Message Sender on the jobs queue, Storage Blob Data Reader on the results container, Storage Blob Data Contributor on the payloads container (claim-check bodies) and Storage Queue Data Message Processor on its reply queue (producerReplyQueueName); nothing on the worker-only staging container.')
param producerPrincipalId string = ''

@allowed([
  'ServicePrincipal'
  'User'
  'Group'
])
@description('Kind of producerPrincipalId (a managed identity or app registration is a ServicePrincipal).')
param producerPrincipalType string = 'ServicePrincipal'

@minLength(3)
@maxLength(63)
@description('Reply queue the producer follows for notices (reply_to). It gets read + delete on this ONE queue, and only when the name is one of replyQueueNames (a queue the worker may reply to, created here).')
param producerReplyQueueName string = 'job-replies'

// ---- Azure OpenAI ----
// One model deployment, every part of it a parameter (azd: the AZURE_OPENAI_* values in
// main.parameters.json). Before azd creates anything, its preprovision hook
// (infra/hooks/preflight.py) checks that the region offers this model, version and SKU, that they
// are not deprecated, and that the capacity fits the free quota. Model choice, upgrade policy and
// retirement dates: docs/deploy.md#model-choice.

@description('Region of the Azure OpenAI account when it differs from location (model and quota availability differ by region). Empty: location.')
param openAiLocation string = ''

@minLength(1)
@description('Model to deploy (azd: AZURE_OPENAI_MODEL_NAME). Default gpt-5.4-mini: GA, retirement scheduled for 2027-09-21 (Microsoft moves these dates; check with az cognitiveservices model list -l <region>).')
param openAiModelName string = 'gpt-5.4-mini'

@minLength(1)
@description('Model version (azd: AZURE_OPENAI_MODEL_VERSION), always explicit: without one the service picks the current default version, which changes over time and can fail with DeploymentModelNotSupported.')
param openAiModelVersion string = '2026-03-17'

@description('Name of the model deployment the worker calls (AZURE_OPENAI_DEPLOYMENT and AZURE_OPENAI_ALLOWED_DEPLOYMENTS; azd: AZURE_OPENAI_DEPLOYMENT_NAME). Empty: the model name.')
param openAiDeploymentName string = ''

@allowed([
  'GlobalStandard'
  'DataZoneStandard'
  'Standard'
])
@description('Deployment SKU (azd: AZURE_OPENAI_DEPLOYMENT_SKU). GlobalStandard has the most quota; DataZoneStandard/Standard keep processing in a data zone/region. Not every model offers every SKU in every region.')
param openAiDeploymentSkuName string = 'GlobalStandard'

@minValue(1)
@description('Deployment capacity in units of 1,000 tokens per minute (azd: AZURE_OPENAI_DEPLOYMENT_CAPACITY): 50 = 50,000 TPM and, for gpt-5.4-mini, 50 requests per minute. A twentieth of the 1,000 units a Tier-1 subscription gets for the model per region, so several environments fit; it must fit the free quota of the model and SKU in the region.')
param openAiDeploymentCapacity int = 50

@allowed([
  'chat'
  'responses'
])
@description('The API the worker calls the model deployment through (AZURE_OPENAI_API and each AZURE_OPENAI_POOL entry\'s api; azd: AZURE_OPENAI_API): chat (Chat Completions) or responses (the Responses API, which the Responses-only models need: the -pro and -codex lines, codex-mini, o3-pro). The preflight refuses a Responses-only model with chat. docs/responses.md')
param openAiApi string = 'chat'

@minValue(1)
@description('Per-request timeout of model calls in seconds (AZURE_OPENAI_TIMEOUT_SECONDS).')
param openAiTimeoutSeconds int = 60

@minValue(0)
@description('Retries the openai SDK makes itself on 429/5xx/timeouts (AZURE_OPENAI_MAX_RETRIES).')
param openAiMaxRetries int = 2

// ---- Deployment pool: a second Azure OpenAI account (optional) ----
// The same model deployment (the model, version, SKU and deployment name above) in a second
// account in another region, listed in AZURE_OPENAI_POOL at priority 2: the worker turns to it
// while the first is throttled or down, and waits out an outage of both for up to
// modelOutageToleranceSeconds. Quota is per subscription, region, model and deployment type, so a
// second region adds quota as well as a fallback. The worker's identity gets Cognitive Services
// OpenAI User on each account; with vnetEnabled each has its own private endpoint.
// docs/deploy.md#deployment-pool

@description('Region of a second Azure OpenAI account with the same model deployment, the deployment pool\'s fallback (AZURE_OPENAI_POOL priority 2; azd: AZURE_OPENAI_SECONDARY_LOCATION). Empty: no second account; the pool is the first deployment alone.')
param secondaryOpenAiLocation string = ''

@minValue(1)
@description('Capacity of the second deployment in units of 1,000 tokens per minute (azd: AZURE_OPENAI_SECONDARY_DEPLOYMENT_CAPACITY). It must fit the free quota of the model and SKU in secondaryOpenAiLocation. Used only with secondaryOpenAiLocation.')
param secondaryOpenAiDeploymentCapacity int = 50

@minValue(0)
@description('How long a job waits out a model outage (every pool entry failing) by re-enqueuing itself with a growing delay, before it fails transient_exhausted, in seconds (MODEL_OUTAGE_TOLERANCE_SECONDS).')
param modelOutageToleranceSeconds int = 1800

@minValue(0)
@description('Longest wait in the pacing gate of an instance before a model call, in seconds (MODEL_ADMISSION_WAIT_SECONDS), then a throttled re-enqueue. 0: pacing off.')
param modelAdmissionWaitSeconds int = 60

// ---- Batch lane: a GlobalBatch deployment (optional) ----
// Jobs with "lane": "batch" are staged in stagingContainerName and sent as batch files to a
// GlobalBatch deployment on the Azure OpenAI account (half the price, answers within 24 hours, a
// quota of its own). Off unless openAiBatchModelName is set; then the worker's identity also gets a
// custom role with exactly the files and batches data actions. docs/deploy.md#batch-lane

@description('Model of a GlobalBatch deployment for the batch lane (azd: AZURE_OPENAI_BATCH_MODEL_NAME): one the GlobalBatch model matrix lists, e.g. gpt-5.4-mini or gpt-4.1-mini (not gpt-5-mini or gpt-5.4-nano). Empty: no batch deployment, BATCH_DEPLOYMENT is empty and the batch lane is off.')
param openAiBatchModelName string = ''

@minLength(1)
@description('Version of the batch model (azd: AZURE_OPENAI_BATCH_MODEL_VERSION), always explicit: gpt-5.4-mini 2026-03-17, gpt-4.1-mini 2025-04-14. Used only with openAiBatchModelName.')
param openAiBatchModelVersion string = '2026-03-17'

@description('Name of the batch deployment (BATCH_DEPLOYMENT; azd: AZURE_OPENAI_BATCH_DEPLOYMENT_NAME). Empty: <model>-batch. It must differ from the live deployment\'s name.')
param openAiBatchDeploymentName string = ''

@minValue(1)
@description('Capacity of the batch deployment (azd: AZURE_OPENAI_BATCH_DEPLOYMENT_CAPACITY), counted against the separate GlobalBatch quota of the model in the region (enqueued tokens; OpenAI.GlobalBatch.<model> in az cognitiveservices usage list). Used only with openAiBatchModelName.')
param openAiBatchDeploymentCapacity int = 50

// ---- Function App ----

@minValue(0)
@maxValue(1000)
@description('''Flex Consumption scale-out limit (azd: MAXIMUM_INSTANCE_COUNT): protects the Azure OpenAI quota, not just the bill.
0 (the default): derived from the quota, see instanceCap in resources.bicep and docs/sizing.md.
Each instance runs up to 24 jobs at once (host.json queues batchSize 4 + newBatchThreshold 20),
so up to maximumInstanceCount x 24 concurrent model calls. Every call is charged prompt tokens +
max_tokens against the deployment's TPM quota (openAiDeploymentCapacity x 1,000 per minute, plus
secondaryOpenAiDeploymentCapacity x 1,000 with a second account). Jobs of expectedTokensPerCall
tokens that take expectedSecondsPerCall each make 60 / expectedSecondsPerCall calls/min per slot:
at 1,000 tokens and 5 s ONE instance can use 24 x 12 x 1,000 = 288,000 TPM, far above the default
50,000 TPM. Past the quota extra instances only wait in the pacing gate or collect 429s. The derived
cap is TPM / (24 x tokens per call x calls per minute per slot), rounded up, 1 to 1,000; the azd
preprovision hook prints it and how it got it. Set a number to override it.''')
param maximumInstanceCount int = 0

@minValue(1)
@description('Tokens one model call is charged at admission (prompt + output budget), for the derived maximumInstanceCount (azd: EXPECTED_TOKENS_PER_CALL). A result document\'s usage shows what your jobs take.')
param expectedTokensPerCall int = 1000

@minValue(1)
@description('Seconds one model call takes, for the derived maximumInstanceCount (azd: EXPECTED_SECONDS_PER_CALL). A result document\'s timings.model_seconds shows what your jobs take.')
param expectedSecondsPerCall int = 5

@allowed([
  512
  2048
  4096
])
@description('Memory of each Flex Consumption instance in MB. The worker is I/O bound; 2048 is the platform default.')
param instanceMemoryMB int = 2048

// The Python the Function App runs (functionAppConfig.runtime.version): the versions Flex Consumption
// offers that requirements.txt installs on (3.10 reached end of support in October 2026). The default
// is the newest one generally available on Flex that this project's CI tests; 3.14 is GA on Functions
// (2026-07), but Flex's versions vary by region and nothing here has run on 3.14. README "Runtime";
// the azd preprovision hook (infra/hooks/preflight.py) checks the region offers the version first.
@allowed([
  '3.11'
  '3.12'
  '3.13'
  '3.14'
])
@description('Python version of the Function App (azd: AZURE_PYTHON_VERSION). The region must offer it on Flex Consumption: az functionapp list-flexconsumption-runtimes --location <region> --runtime python.')
param pythonVersion string = '3.13'

// ---- Private networking ----
// Off by default. On (azd: VNET_ENABLED=true): a VNet the Function App is integrated with
// (app/network.bicep), private endpoints for storage blob, queue and table and for Azure OpenAI
// (app/private-endpoints.bicep; the pool's second account too), and public network access off on
// both. docs/deploy.md#private-networking

@description('Private networking (azd: VNET_ENABLED). true: storage (blob, queue, table) and Azure OpenAI only behind private endpoints, public network access off, the Function App integrated with a new VNet. Producers and people then reach the queue from inside (or peered with) that VNet, through a private endpoint of their own, or with a temporary IP rule.')
param vnetEnabled bool = false

// ---- Monitoring: alerts, diagnostic settings, workbook (app/alerts.bicep) ----
// Alerts go to one action group; the thresholds below are where they fire. What each alert reads,
// and what is estimated or unconfirmed: docs/deploy.md#monitoring.

@description('E-mail address the alerts are sent to (azd: ALERT_EMAIL). Empty: the action group has no receiver; the alerts still fire and show in the portal.')
param alertEmail string = ''

@minValue(0)
@description('Jobs failing alert: more than this many jobs end with status=failed in 15 minutes.')
param alertFailedJobsThreshold int = 5

@minValue(1)
@description('Queue wait alert: the 95th percentile of the time jobs waited in the queue, over 15 minutes, above this many seconds.')
param alertQueueWaitP95Seconds int = 300

@minValue(1)
@description('Throttling alert: Azure OpenAI answers more than this many requests with 429 in 5 minutes.')
param alertThrottledRequestsThreshold int = 50

@minValue(0)
@description('Function errors alert: more than this many function invocations fail in 15 minutes.')
param alertFunctionErrorsThreshold int = 5

// ---- Worker settings: queue and container names (match local.settings.sample.json) ----

@description('Queue the worker listens on (JOBS_QUEUE). <name>-poison is created beside it.')
param jobsQueueName string = 'jobs'

@description('Blob container for results, one <id>.json per job (RESULTS_CONTAINER).')
param resultsContainerName string = 'results'

@description('Blob container for claim-check payloads of big jobs (PAYLOADS_CONTAINER).')
param payloadsContainerName string = 'job-payloads'

@description('Queues a job may name as reply_to (REPLY_QUEUES_ALLOWED). Each is created.')
param replyQueueNames array = [
  'job-replies'
]

@minValue(1)
@description('Largest prompt a job may carry, in characters (MAX_PROMPT_CHARS).')
param maxPromptChars int = 200000

@minValue(0)
@description('How long the worker retries PermissionDenied, in seconds (PERMISSION_RETRY_SECONDS): new role assignments take up to ~10 minutes to apply.')
param permissionRetrySeconds int = 900

@minValue(1)
@description('How many times a long-throttled job is re-enqueued before it fails (THROTTLE_MAX_ATTEMPTS).')
param throttleMaxAttempts int = 8

@minValue(1)
@description('Longest wait, in seconds, before a re-enqueued throttled job runs again: caps the retry-after of the service (THROTTLE_MAX_DELAY_SECONDS).')
param throttleMaxDelaySeconds int = 300

@description('Worker-only blob container: retry state, staged batch jobs and batch manifests; producers get no role on it (STAGING_CONTAINER).')
param stagingContainerName string = 'staging'

@description('NCRONTAB schedule (six fields, UTC) of the timer that packs staged jobs into batch files and submits them (BATCH_SUBMIT_SCHEDULE).')
param batchSubmitSchedule string = '0 */5 * * * *'

@description('NCRONTAB schedule of the timer that polls submitted batches and stores their results (BATCH_COLLECT_SCHEDULE). The service asks for a poll at most once a minute.')
param batchCollectSchedule string = '30 * * * * *'

@allowed([
  'restage'
  'live'
])
@description('What a failed, expired or cancelled batch does with its jobs, once (BATCH_ON_FAILURE): restage them for the next batch, or run them in the live lane.')
param batchOnFailure string = 'restage'

@minValue(1)
@maxValue(100000)
@description('Most requests in one batch file (BATCH_MAX_REQUESTS_PER_FILE); the service takes up to 100,000 requests and 200 MB per file.')
param batchMaxRequestsPerFile int = 50000

@minValue(1)
@description('Most estimated enqueued tokens in one batch file (BATCH_MAX_TOKENS_PER_FILE: prompt plus output budget, as the live lane estimates them); at most the batch deployment\'s enqueued-token quota.')
param batchMaxTokensPerFile int = 100000000

// ---- The resource group and everything in it ----

var tags = {
  'azd-env-name': environmentName
}

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module resources 'resources.bicep' = {
  name: 'resources'
  scope: rg
  params: {
    environmentName: environmentName
    location: location
    principalId: principalId
    principalType: principalType
    producerPrincipalId: producerPrincipalId
    producerPrincipalType: producerPrincipalType
    producerReplyQueueName: producerReplyQueueName
    openAiLocation: openAiLocation
    openAiDeploymentName: openAiDeploymentName
    openAiModelName: openAiModelName
    openAiModelVersion: openAiModelVersion
    openAiDeploymentSkuName: openAiDeploymentSkuName
    openAiDeploymentCapacity: openAiDeploymentCapacity
    openAiApi: openAiApi
    openAiTimeoutSeconds: openAiTimeoutSeconds
    openAiMaxRetries: openAiMaxRetries
    secondaryOpenAiLocation: secondaryOpenAiLocation
    secondaryOpenAiDeploymentCapacity: secondaryOpenAiDeploymentCapacity
    modelOutageToleranceSeconds: modelOutageToleranceSeconds
    modelAdmissionWaitSeconds: modelAdmissionWaitSeconds
    openAiBatchModelName: openAiBatchModelName
    openAiBatchModelVersion: openAiBatchModelVersion
    openAiBatchDeploymentName: openAiBatchDeploymentName
    openAiBatchDeploymentCapacity: openAiBatchDeploymentCapacity
    maximumInstanceCount: maximumInstanceCount
    expectedTokensPerCall: expectedTokensPerCall
    expectedSecondsPerCall: expectedSecondsPerCall
    instanceMemoryMB: instanceMemoryMB
    pythonVersion: pythonVersion
    vnetEnabled: vnetEnabled
    jobsQueueName: jobsQueueName
    resultsContainerName: resultsContainerName
    payloadsContainerName: payloadsContainerName
    replyQueueNames: replyQueueNames
    maxPromptChars: maxPromptChars
    permissionRetrySeconds: permissionRetrySeconds
    throttleMaxAttempts: throttleMaxAttempts
    throttleMaxDelaySeconds: throttleMaxDelaySeconds
    stagingContainerName: stagingContainerName
    batchSubmitSchedule: batchSubmitSchedule
    batchCollectSchedule: batchCollectSchedule
    batchOnFailure: batchOnFailure
    batchMaxRequestsPerFile: batchMaxRequestsPerFile
    batchMaxTokensPerFile: batchMaxTokensPerFile
    alertEmail: alertEmail
    alertFailedJobsThreshold: alertFailedJobsThreshold
    alertQueueWaitP95Seconds: alertQueueWaitP95Seconds
    alertThrottledRequestsThreshold: alertThrottledRequestsThreshold
    alertFunctionErrorsThreshold: alertFunctionErrorsThreshold
  }
}

// ---- Outputs (azd writes them to .azure/<env>/.env): resources.bicep's, re-exported one by
// one. Names and endpoints only: no secrets. ----

output AZURE_LOCATION string = resources.outputs.AZURE_LOCATION
output AZURE_TENANT_ID string = resources.outputs.AZURE_TENANT_ID
output RESOURCE_GROUP string = resources.outputs.RESOURCE_GROUP
output AZURE_RESOURCE_GROUP string = resources.outputs.AZURE_RESOURCE_GROUP
output AZURE_OPENAI_ENDPOINT string = resources.outputs.AZURE_OPENAI_ENDPOINT
output AZURE_OPENAI_DEPLOYMENT string = resources.outputs.AZURE_OPENAI_DEPLOYMENT
output AZURE_STORAGE_ACCOUNT_NAME string = resources.outputs.AZURE_STORAGE_ACCOUNT_NAME
output AZURE_STORAGE_QUEUE_ENDPOINT string = resources.outputs.AZURE_STORAGE_QUEUE_ENDPOINT
output AZURE_STORAGE_BLOB_ENDPOINT string = resources.outputs.AZURE_STORAGE_BLOB_ENDPOINT
output AZURE_STORAGE_ACCOUNT_ID string = resources.outputs.AZURE_STORAGE_ACCOUNT_ID
output JOBS_QUEUE string = resources.outputs.JOBS_QUEUE
output RESULTS_CONTAINER string = resources.outputs.RESULTS_CONTAINER
output PAYLOADS_CONTAINER string = resources.outputs.PAYLOADS_CONTAINER
output STAGING_CONTAINER string = resources.outputs.STAGING_CONTAINER
// The deployment pool (JSON) and the second account's endpoint (empty without one).
output AZURE_OPENAI_POOL string = resources.outputs.AZURE_OPENAI_POOL
output AZURE_OPENAI_SECONDARY_ENDPOINT string = resources.outputs.AZURE_OPENAI_SECONDARY_ENDPOINT
// The batch lane's deployment (empty: batch lane off).
output BATCH_DEPLOYMENT string = resources.outputs.BATCH_DEPLOYMENT
output FUNCTION_APP_NAME string = resources.outputs.FUNCTION_APP_NAME
// The worker identity's client id says which identity to use; it grants nothing by itself.
output AZURE_CLIENT_ID string = resources.outputs.AZURE_CLIENT_ID
// Private networking: the VNet to peer with (empty when vnetEnabled is false).
output AZURE_VNET_NAME string = resources.outputs.AZURE_VNET_NAME
output AZURE_VNET_ID string = resources.outputs.AZURE_VNET_ID
