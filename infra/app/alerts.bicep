// Alerts, diagnostic settings and a workbook over the telemetry the worker sends to Application
// Insights (workspace-based, so every query here reads the Log Analytics tables AppTraces,
// AppMetrics, AppRequests, AppExceptions: the workspace-based schema throughout, not traces/customMetrics).
//
// - an action group, with an e-mail receiver only when alertEmail is set;
// - log alerts (scheduled queries on the workspace): jobs failing, the poison queue not empty,
//   queue wait p95 too high, function errors;
// - a metric alert on the Azure OpenAI account: requests answered 429 (AzureOpenAIRequests by
//   StatusCode);
// - diagnostic settings: Azure OpenAI (logs + metrics) and the storage queue service (logs) to the
//   workspace;
// - a shared workbook (workbook.json) with the same queries as panels.
//
// What the app emits, and where it lands (docs/deploy.md#monitoring):
// - one INFO line per job from logger shared.delivery, in AppTraces.Message:
//   `job id=<id> status=<succeeded|failed> code=<code|-> deployment=<d> attempt=<n> latency_ms=...`
// - OpenTelemetry metrics (shared/telemetry/) in AppMetrics: Name, Sum, ItemCount, Min, Max, and
//   Properties = the attributes as strings (a bool is "True"/"False").
//   The Azure Monitor exporter sends a histogram as sum/count/min/max per export interval, without
//   buckets, so percentiles here are over per-interval means weighted by their counts: an estimate.

@description('Suffix of the resource names (the deployment\'s resource token).')
param nameSuffix string

@description('Region of the log alerts and the workbook (action group and metric alert: global).')
param location string

@description('Tags for every resource here.')
param tags object = {}

@description('Log Analytics workspace behind Application Insights: the log alerts query it and the diagnostic settings send to it.')
param logAnalyticsName string

@description('Azure OpenAI account: the 429 alert watches it, its diagnostic setting sends to the workspace.')
param openAiAccountName string

@description('Storage account: the diagnostic setting of its queue service sends to the workspace.')
param storageAccountName string

@description('E-mail address the action group notifies. Empty: no receiver (the alerts still fire and show in the portal).')
param alertEmail string = ''

@minValue(0)
@description('Jobs failing: more than this many distinct jobs ending with status=failed in 15 minutes.')
param failedJobsThreshold int = 5

@minValue(1)
@description('Queue wait: the 95th percentile of the time jobs waited in the queue, over 15 minutes, above this many seconds.')
param queueWaitP95Seconds int = 300

@minValue(1)
@description('Throttling: more than this many Azure OpenAI requests answered 429 in 5 minutes.')
param throttledRequestsThreshold int = 50

@minValue(0)
@description('Function errors: more than this many failed invocations (failed requests or exceptions) in 15 minutes.')
param functionErrorsThreshold int = 5

// The metric names of the worker (shared/telemetry/), in ONE place: the alert queries and the
// workbook (its __PLACEHOLDERS__) take them from here. tests/infra checks shared/ emits each one.
var metrics = {
  jobsFinished: 'worker.jobs.finished'
  queueWait: 'worker.jobs.queue_wait'
  requeued: 'worker.jobs.requeued'
  throttled: 'worker.model.throttled'
  queueDepth: 'worker.queue.depth'
  queueAge: 'worker.queue.oldest_message.age'
  tokenUsage: 'gen_ai.client.token.usage'
}

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: logAnalyticsName
}

resource openAi 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = {
  name: openAiAccountName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

// ---- Who is told ----

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: 'ag-${nameSuffix}'
  location: 'global'
  tags: tags
  properties: {
    // At most 12 characters (SMS and e-mail subjects show it).
    groupShortName: 'jobworker'
    enabled: true
    emailReceivers: empty(alertEmail) ? [] : [
      {
        name: 'email'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// ---- Log alerts: scheduled queries on the workspace, every 5 minutes over the last 15 ----
// Each query returns one row with a column `value`, compared with the threshold.

resource failedJobsAlert 'Microsoft.Insights/scheduledQueryRules@2021-08-01' = {
  name: 'alert-failed-jobs-${nameSuffix}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Jobs failing'
    description: 'More than ${failedJobsThreshold} jobs ended with status=failed in 15 minutes (the worker\'s one line per job; code= says why).'
    severity: 2
    enabled: true
    scopes: [
      workspace.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    // The tables appear with the first telemetry: do not fail a first deployment on them. Azure's
    // check would parse the query and bind it to the tables; tests/infra/test_kql.py does that before
    // deployment, with the Kusto language service (docs/deploy.md#monitoring).
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          // dcount(id): a line exported twice, or a job redelivered, counts once.
          query: '''
AppTraces
| where Message startswith "job id="
| parse Message with "job id=" id " status=" status " " *
| where status == "failed"
| summarize value = dcount(id)
'''
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'value'
          operator: 'GreaterThan'
          threshold: failedJobsThreshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

resource poisonQueueAlert 'Microsoft.Insights/scheduledQueryRules@2021-08-01' = {
  name: 'alert-poison-queue-${nameSuffix}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Poison queue not empty'
    description: 'The worker\'s queue sampler (a timer, every minute) saw messages in <jobs>-poison (${metrics.queueDepth}). Inspect and replay them with python -m shared status / replay.'
    severity: 1
    enabled: true
    scopes: [
      workspace.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          // The latest sample in the window (the storage QueueMessageCount metric is account-wide
          // and refreshed daily: no use here).
          query: format('''
AppMetrics
| where Name == "{0}" and tostring(Properties["messaging.destination.name"]) endswith "-poison"
| summarize arg_max(TimeGenerated, Sum)
| project value = Sum
''', metrics.queueDepth)
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'value'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

resource queueWaitAlert 'Microsoft.Insights/scheduledQueryRules@2021-08-01' = {
  name: 'alert-queue-wait-${nameSuffix}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Queue wait p95 too high'
    description: 'Jobs waited more than ${queueWaitP95Seconds} s in the queue (95th percentile, estimated from ${metrics.queueWait}): the backlog outgrows the scale-out limit or the model quota.'
    severity: 2
    enabled: true
    scopes: [
      workspace.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          // Sum / ItemCount: the mean wait of one export interval, weighted by its job count.
          // Re-enqueued (throttled) jobs wait on purpose, up to THROTTLE_MAX_DELAY_SECONDS: left out.
          query: format('''
AppMetrics
| where Name == "{0}" and ItemCount > 0 and tostring(Properties["job.requeued"]) != "True"
| summarize value = percentilew(Sum / ItemCount, ItemCount, 95)
''', metrics.queueWait)
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'value'
          operator: 'GreaterThan'
          threshold: queueWaitP95Seconds
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

resource functionErrorsAlert 'Microsoft.Insights/scheduledQueryRules@2021-08-01' = {
  name: 'alert-function-errors-${nameSuffix}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Function errors'
    description: 'More than ${functionErrorsThreshold} function invocations failed (a failed request or an exception) in 15 minutes: the host retries them, then moves the message to the poison queue.'
    severity: 2
    enabled: true
    scopes: [
      workspace.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          // One per failing invocation (operation), whether it left a failed request, an
          // exception or both.
          query: '''
union
    (AppRequests | where Success == false | project OperationId),
    (AppExceptions | project OperationId)
| summarize value = dcount(OperationId)
'''
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'value'
          operator: 'GreaterThan'
          threshold: functionErrorsThreshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

// ---- Metric alert: Azure OpenAI throttling, from the account's own platform metric ----

resource throttlingAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'alert-openai-429-${nameSuffix}'
  location: 'global'
  tags: tags
  properties: {
    description: 'Azure OpenAI answered more than ${throttledRequestsThreshold} requests with 429 in 5 minutes: the deployment\'s TPM/RPM quota is exhausted (the worker backs off and re-enqueues).'
    severity: 3
    enabled: true
    scopes: [
      openAi.id
    ]
    evaluationFrequency: 'PT1M'
    windowSize: 'PT5M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          name: 'throttled'
          criterionType: 'StaticThresholdCriterion'
          metricNamespace: 'Microsoft.CognitiveServices/accounts'
          metricName: 'AzureOpenAIRequests'
          dimensions: [
            {
              name: 'StatusCode'
              operator: 'Include'
              values: [
                '429'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: throttledRequestsThreshold
          timeAggregation: 'Total'
        }
      ]
    }
    autoMitigate: true
    actions: [
      {
        actionGroupId: actionGroup.id
      }
    ]
  }
}

// ---- Diagnostic settings: resource logs to the workspace ----

resource openAiDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'openai-to-${logAnalyticsName}'
  scope: openAi
  properties: {
    workspaceId: workspace.id
    logs: [
      {
        category: 'Audit'
        enabled: true
      }
      {
        category: 'RequestResponse'
        enabled: true
      }
      {
        category: 'Trace'
        enabled: true
      }
      {
        category: 'AzureOpenAIRequestUsage'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

// The queue service only (jobs, poison and reply queues): StorageQueueLogs. Every poll of the
// Functions host is a StorageRead entry, so this is the noisiest table here.
resource queueDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'queues-to-${logAnalyticsName}'
  scope: queueService
  properties: {
    workspaceId: workspace.id
    logs: [
      {
        category: 'StorageRead'
        enabled: true
      }
      {
        category: 'StorageWrite'
        enabled: true
      }
      {
        category: 'StorageDelete'
        enabled: true
      }
    ]
  }
}

// ---- Workbook: the same sources as panels (workbook.json, metric names filled in from `metrics`) ----

resource workerWorkbook 'Microsoft.Insights/workbooks@2022-04-01' = {
  // A workbook's name is a GUID: one per resource group and environment.
  name: guid(resourceGroup().id, 'queue-worker-workbook', nameSuffix)
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'Queue worker (${nameSuffix})'
    category: 'workbook'
    sourceId: workspace.id
    serializedData: replace(replace(replace(replace(replace(replace(replace(replace(string(loadJsonContent('workbook.json')), '__WORKSPACE_ID__', workspace.id), '__JOBS_FINISHED__', metrics.jobsFinished), '__QUEUE_WAIT__', metrics.queueWait), '__REQUEUED__', metrics.requeued), '__THROTTLED__', metrics.throttled), '__QUEUE_DEPTH__', metrics.queueDepth), '__QUEUE_AGE__', metrics.queueAge), '__TOKEN_USAGE__', metrics.tokenUsage)
  }
}

output actionGroupId string = actionGroup.id
output workbookId string = workerWorkbook.id
