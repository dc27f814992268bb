// The worker: a Python Function App on the Flex Consumption plan, running as the ONE
// user-assigned identity for everything (no connection strings, no keys, no publishing
// passwords). The app settings below are exactly the names shared/settings/ reads.

@description('Name of the Function App.')
param name string

@description('Name of the Flex Consumption plan.')
param planName string

@description('Region of the plan and the app.')
param location string

@description('Tags for the plan and the app.')
param tags object = {}

@description('azd service name in azure.yaml: azd deploy finds the app by this tag.')
param serviceName string = 'worker'

@description('Resource id of the user-assigned identity the app runs as.')
param identityId string

@description('Client id of that identity (AZURE_CLIENT_ID, AzureWebJobsStorage__clientId).')
param identityClientId string

@description('Storage account for the host, the deployment package, queues and blobs.')
param storageAccountName string

@description('Container holding the deployment package.')
param deploymentContainerName string

@description('Application Insights component.')
param appInsightsName string

@description('Python version of the worker (functionAppConfig.runtime.version), as main.bicep allows it.')
@allowed([
  '3.11'
  '3.12'
  '3.13'
  '3.14'
])
param pythonVersion string

@minValue(1)
@maxValue(1000)
@description('Flex Consumption scale-out limit (see resources.bicep for the quota math).')
param maximumInstanceCount int

@allowed([
  512
  2048
  4096
])
@description('Memory of each instance in MB.')
param instanceMemoryMB int

@description('Private networking: integrate the app with the VNet (outbound) through appSubnetId.')
param vnetEnabled bool = false

@description('Subnet of the VNet integration, delegated to Microsoft.App/environments (network.bicep). Used only when vnetEnabled.')
param appSubnetId string = ''

// ---- Worker settings (shared/settings/) ----

@description('https://<subdomain>.openai.azure.com/: the worker calls its v1 API, <endpoint>/openai/v1/, which takes no api-version.')
param openAiEndpoint string

@description('Default deployment.')
param openAiDeploymentName string

@description('Deployments a job may name, comma-separated.')
param openAiAllowedDeployments string

@description('Per-request timeout of model calls, seconds.')
param openAiTimeoutSeconds int

@description('Retries the openai SDK makes itself.')
param openAiMaxRetries int

@allowed([
  'chat'
  'responses'
])
@description('The API the deployments serve (AZURE_OPENAI_API): chat or responses.')
param openAiApi string

@description('Queue the trigger listens on.')
param jobsQueueName string

@description('Container for results.')
param resultsContainerName string

@description('Container for claim-check payloads.')
param payloadsContainerName string

@description('Queues a job may name as reply_to.')
param replyQueueNames array

@description('Largest prompt a job may carry, characters.')
param maxPromptChars int

@description('How long PermissionDenied is retried, seconds (role assignments take minutes to apply).')
param permissionRetrySeconds int

@description('How often a throttled job is re-enqueued before it fails.')
param throttleMaxAttempts int

@description('Longest wait before a re-enqueued throttled job runs again, seconds.')
param throttleMaxDelaySeconds int

@description('Longest wait in the instance pacing gate before a model call, seconds (0: pacing off).')
param modelAdmissionWaitSeconds int

@description('The deployment pool (AZURE_OPENAI_POOL): [{name, endpoint, deployment, priority}], the first account\'s deployment at priority 1 and, when there is one, the second account\'s at priority 2.')
param openAiPool array

@description('How long a job waits out a model outage (every pool entry failing) by re-enqueuing itself, seconds.')
param modelOutageToleranceSeconds int

@description('Most re-enqueues of one job across every cause, then it fails with the last cause (RETRY_MAX_ATTEMPTS).')
param retryMaxAttempts int = 24

@description('Longest time one job spends being re-enqueued across every cause, in seconds (RETRY_MAX_SECONDS).')
param retryMaxSeconds int = 7200

@description('When a deployment answers again after an outage, wake the jobs waiting it out over this many seconds (RECOVERY_SPREAD_SECONDS; 0: they wait out their backoff).')
param recoverySpreadSeconds int = 5

@description('GlobalBatch deployment of the batch lane on openAiEndpoint (empty: batch lane off).')
param batchDeploymentName string

@description('Container for staged batch-lane jobs and batch manifests.')
param stagingContainerName string

@description('NCRONTAB schedule of the batch submit timer.')
param batchSubmitSchedule string

@description('NCRONTAB schedule of the batch collect timer.')
param batchCollectSchedule string

@description('What a failed, expired or cancelled batch does with its jobs, once: restage or live.')
param batchOnFailure string

@description('Most requests the batch lane puts in one batch file.')
param batchMaxRequestsPerFile int

@description('Most estimated enqueued tokens the batch lane puts in one batch file.')
param batchMaxTokensPerFile int

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: zone redundancy on Flex Consumption needs a region with availability zones; a queue worker rides out a zone outage by leaving messages in the queue (at-least-once). Set zoneRedundant where the region supports it.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    // Linux.
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: azd deploy publishes over the app's scm endpoint (Entra token, basic auth off below); the worker has no HTTP triggers. vnetEnabled is outbound only: an inbound private endpoint is reported to hang Flex deploys (Azure/Azure-Functions#2635).
  // checkov:skip=CKV_AZURE_17: no HTTP triggers, so no HTTP clients to authenticate with certificates; the only callers are the platform and azd deploy (Entra).
  // checkov:skip=CKV_AZURE_212: numberOfWorkers does not apply to Flex Consumption: it scales per queue length from zero, and jobs wait durably in the queue.
  // checkov:skip=CKV_AZURE_213: health check pings an HTTP path; a queue-triggered app has none, and Flex Consumption replaces unhealthy instances itself.
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': serviceName })
  kind: 'functionapp,linux'
  identity: {
    // Only the user-assigned identity: no second, system-assigned principal to grant or audit.
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // VNet integration (outbound): storage and Azure OpenAI through their private endpoints.
    virtualNetworkSubnetId: vnetEnabled ? appSubnetId : null
    siteConfig: {
      ftpsState: 'Disabled'
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      http20Enabled: true
      // The complete set of app settings. Names match shared/settings/ SETTINGS and
      // local.settings.sample.json; tests/infra checks all three agree.
      appSettings: [
        // Host storage through the identity: no AzureWebJobsStorage connection string.
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: identityClientId
        }
        {
          name: 'AzureWebJobsStorage__blobServiceUri'
          value: storage.properties.primaryEndpoints.blob
        }
        {
          name: 'AzureWebJobsStorage__queueServiceUri'
          value: storage.properties.primaryEndpoints.queue
        }
        {
          name: 'AzureWebJobsStorage__tableServiceUri'
          value: storage.properties.primaryEndpoints.table
        }
        // Azure OpenAI.
        {
          name: 'AZURE_OPENAI_ENDPOINT'
          value: openAiEndpoint
        }
        // The audience of the account openai.bicep creates (a Foundry project endpoint would take
        // https://ai.azure.com/.default instead: docs/settings.md).
        {
          name: 'AZURE_OPENAI_TOKEN_SCOPE'
          value: 'https://cognitiveservices.azure.com/.default'
        }
        {
          name: 'AZURE_OPENAI_DEPLOYMENT'
          value: openAiDeploymentName
        }
        {
          name: 'AZURE_OPENAI_ALLOWED_DEPLOYMENTS'
          value: openAiAllowedDeployments
        }
        {
          name: 'AZURE_OPENAI_TIMEOUT_SECONDS'
          value: string(openAiTimeoutSeconds)
        }
        {
          name: 'AZURE_OPENAI_MAX_RETRIES'
          value: string(openAiMaxRetries)
        }
        // The deployment pool: a JSON array, the first account's deployment at priority 1 and, with a
        // second account, its deployment at priority 2 (the fallback while the first is throttled or
        // down). Endpoints only, no keys: the worker's identity has a role on each account.
        {
          name: 'AZURE_OPENAI_POOL'
          value: string(openAiPool)
        }
        // Queues and containers (created by storage.bicep from the same names).
        {
          name: 'JOBS_QUEUE'
          value: jobsQueueName
        }
        {
          name: 'RESULTS_CONTAINER'
          value: resultsContainerName
        }
        {
          name: 'PAYLOADS_CONTAINER'
          value: payloadsContainerName
        }
        {
          name: 'REPLY_QUEUES_ALLOWED'
          value: join(replyQueueNames, ',')
        }
        {
          name: 'STAGING_CONTAINER'
          value: stagingContainerName
        }
        // Limits and retries.
        {
          name: 'MAX_PROMPT_CHARS'
          value: string(maxPromptChars)
        }
        {
          name: 'PERMISSION_RETRY_SECONDS'
          value: string(permissionRetrySeconds)
        }
        {
          name: 'THROTTLE_MAX_ATTEMPTS'
          value: string(throttleMaxAttempts)
        }
        {
          name: 'THROTTLE_MAX_DELAY_SECONDS'
          value: string(throttleMaxDelaySeconds)
        }
        {
          name: 'MODEL_ADMISSION_WAIT_SECONDS'
          value: string(modelAdmissionWaitSeconds)
        }
        {
          // Off until the simulation measures it better on every figure (docs/scaling.md "Sharing one quota").
          name: 'PACING_SHARED_BUDGET'
          value: 'false'
        }
        {
          name: 'MODEL_OUTAGE_TOLERANCE_SECONDS'
          value: string(modelOutageToleranceSeconds)
        }
        {
          name: 'RETRY_MAX_ATTEMPTS'
          value: string(retryMaxAttempts)
        }
        {
          name: 'RETRY_MAX_SECONDS'
          value: string(retryMaxSeconds)
        }
        // The Responses API, background jobs and service tiers (docs/responses.md): the deployment above serves
        // the API main.bicep's openAiApi names, here and in each AZURE_OPENAI_POOL entry (which wins over this).
        {
          name: 'AZURE_OPENAI_API'
          value: openAiApi
        }
        {
          name: 'AZURE_OPENAI_BACKGROUND'
          value: 'false'
        }
        {
          name: 'AZURE_OPENAI_SERVICE_TIER'
          value: ''
        }
        {
          name: 'FLEX_MAX_WAIT_SECONDS'
          value: '600'
        }
        {
          name: 'BACKGROUND_MAX_SECONDS'
          value: '3600'
        }
        {
          name: 'BACKGROUND_POLL_SECONDS'
          value: '5'
        }
        {
          name: 'BACKGROUND_POLL_MAX_SECONDS'
          value: '60'
        }
        {
          name: 'RECOVERY_SPREAD_SECONDS'
          value: string(recoverySpreadSeconds)
        }
        // The batch lane: off while BATCH_DEPLOYMENT is empty (a "lane": "batch" job then fails at once).
        {
          name: 'BATCH_DEPLOYMENT'
          value: batchDeploymentName
        }
        {
          name: 'BATCH_SUBMIT_SCHEDULE'
          value: batchSubmitSchedule
        }
        {
          name: 'BATCH_COLLECT_SCHEDULE'
          value: batchCollectSchedule
        }
        {
          name: 'BATCH_ON_FAILURE'
          value: batchOnFailure
        }
        {
          name: 'BATCH_MAX_REQUESTS_PER_FILE'
          value: string(batchMaxRequestsPerFile)
        }
        {
          name: 'BATCH_MAX_TOKENS_PER_FILE'
          value: string(batchMaxTokensPerFile)
        }
        // The batch model infra deploys (gpt-5.4-mini or gpt-4.1-mini) serves Chat Completions; a Responses-only
        // batch deployment needs 'responses' here.
        {
          name: 'BATCH_API'
          value: 'chat'
        }
        // azure-identity: use the managed identity, this one, and skip every other credential.
        {
          name: 'AZURE_CLIENT_ID'
          value: identityClientId
        }
        {
          name: 'AZURE_TOKEN_CREDENTIALS'
          value: 'ManagedIdentityCredential'
        }
        // Telemetry with Entra auth (App Insights local auth is off). The connection string holds
        // no secret once local auth is disabled: it only says where to send.
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: appInsights.properties.ConnectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'ClientId=${identityClientId};Authorization=AAD'
        }
        // Microsoft's Python worker calls configure_azure_monitor itself (keyless: the exporter
        // reads the authentication string above). The app configures nothing, so telemetry is
        // set up once; PYTHON_ENABLE_OPENTELEMETRY (code-side setup) stays unset.
        {
          name: 'PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY'
          value: 'true'
        }
        // host.json's telemetryMode, set only here (an app setting overrides host.json): in Azure the
        // host exports through the same OpenTelemetry pipeline; local runs keep the default.
        {
          name: 'AzureFunctionsJobHost__telemetryMode'
          value: 'OpenTelemetry'
        }
        // The sample's values: service.name as the platform sets it (empty is ignored), and no
        // prompts or answers on spans. OTEL_EXPORTER_OTLP_* (collectors outside Azure) stay unset.
        {
          name: 'OTEL_SERVICE_NAME'
          value: ''
        }
        {
          name: 'OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT'
          value: 'false'
        }
      ]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          // azd deploy uploads the zip here; the platform reads it with the app identity (with
          // vnetEnabled: over the blob private endpoint, docs/deploy.md#private-networking).
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      // On Flex Consumption the runtime is set here, not by FUNCTIONS_WORKER_RUNTIME.
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

// Publishing with a username/password (FTP, Kudu basic auth) is off: azd deploys with an
// Entra token.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = site.name
output id string = site.id
output defaultHostName string = site.properties.defaultHostName
