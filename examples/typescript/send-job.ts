/**
 * Send one job to the keyless worker's queue from Node.js, then print its result.
 *
 *   npx tsx send-job.ts "Summarise the plot of Hamlet" [--id ID] [--deployment D] [--system S]
 *                       [--reply-to QUEUE] [--lane live|batch] [--timeout SECONDS] [--no-wait]
 *
 * --lane batch sends the job through the worker's batch lane (Azure OpenAI Global Batch: half the
 * price, answered within 24 hours, the same result blob); give --timeout accordingly, or --no-wait.
 *
 * Keyless: DefaultAzureCredential signs in as the managed identity in Azure (App Service /
 * Functions: IDENTITY_ENDPOINT + IDENTITY_HEADER; no IMDS probe then) or as your `az login` on a
 * laptop. AZURE_TOKEN_CREDENTIALS=ManagedIdentityCredential (or "dev") narrows the chain.
 *
 * Settings (environment):
 *   AZURE_STORAGE_QUEUE_URL / AZURE_STORAGE_BLOB_URL, or the worker's own
 *   AzureWebJobsStorage__queueServiceUri / AzureWebJobsStorage__blobServiceUri, or
 *   AzureWebJobsStorage__accountName (public cloud); JOBS_QUEUE (default jobs),
 *   RESULTS_CONTAINER (default results), PAYLOADS_CONTAINER (default job-payloads).
 *   TRACEPARENT / TRACESTATE (optional): W3C trace context, as OpenTelemetry passes it to a child
 *   process through the environment; copied into the job so the worker's trace continues it.
 *
 * Roles: Storage Queue Data Message Sender on the queue, Storage Blob Data Reader on the results
 * container (and Storage Blob Data Contributor on the payloads container for jobs over 48 KiB).
 *
 * Exit codes (as `python -m shared submit`): 0 succeeded, 1 the job failed, 2 usage,
 * 3 configuration/sign-in/permission, 4 timed out, 5 other error.
 */
import { randomUUID } from "node:crypto";
import { parseArgs } from "node:util";

import { DefaultAzureCredential } from "@azure/identity";
import { BlobServiceClient } from "@azure/storage-blob";
import { QueueServiceClient } from "@azure/storage-queue";

// The contract (schemas/job.schema.json): the fields this example sets.
interface Job {
  id: string;
  prompt: string;
  system?: string;
  deployment?: string;
  reply_to?: string;
  lane?: "live" | "batch";
  traceparent?: string;
  tracestate?: string;
}

interface Result {
  id: string;
  status: "succeeded" | "failed";
  output?: string;
  error?: { code: string; message: string };
}

const JOB_ID = /^[A-Za-z0-9_-]{1,128}$/;
// W3C Trace Context version 00, as the contract takes it; all-zero ids and version ff are invalid.
const TRACEPARENT = /^(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$/;
const TRACESTATE_MAX = 512;
// A queue message holds 64 KiB; a bigger job goes to the payloads container and the message
// carries a reference (the claim check the worker resolves). Same threshold as shared/jobs.py.
const CLAIM_CHECK_BYTES = 48 * 1024;
const SENDER_ROLE = "Storage Queue Data Message Sender";
const READER_ROLE = "Storage Blob Data Reader";
const PAYLOAD_ROLE = "Storage Blob Data Contributor";

class ExitError extends Error {
  constructor(
    message: string,
    readonly code: number,
  ) {
    super(message);
  }
}

function env(name: string): string | undefined {
  const value = process.env[name]?.trim();
  return value ? value : undefined;
}

// The caller's trace context from the environment (no OpenTelemetry dependency needed): a malformed
// one is left out with a warning rather than failing the job at the worker.
function traceContext(): Pick<Job, "traceparent" | "tracestate"> {
  const traceparent = env("TRACEPARENT");
  if (!traceparent) return {};
  if (!TRACEPARENT.test(traceparent)) {
    console.error("warning: TRACEPARENT is not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>); not sent");
    return {};
  }
  const tracestate = env("TRACESTATE");
  return tracestate && tracestate.length <= TRACESTATE_MAX ? { traceparent, tracestate } : { traceparent };
}

function serviceUrl(kind: "queue" | "blob"): string {
  const explicit = env(kind === "queue" ? "AZURE_STORAGE_QUEUE_URL" : "AZURE_STORAGE_BLOB_URL");
  const functions = env(`AzureWebJobsStorage__${kind}ServiceUri`);
  const account = env("AzureWebJobsStorage__accountName");
  const url = explicit ?? functions ?? (account ? `https://${account}.${kind}.core.windows.net` : undefined);
  if (!url) {
    throw new ExitError(
      `no ${kind} endpoint: set AZURE_STORAGE_${kind.toUpperCase()}_URL (https://<account>.${kind}.core.windows.net) ` +
        `or the worker's AzureWebJobsStorage__${kind}ServiceUri / AzureWebJobsStorage__accountName`,
      3,
    );
  }
  return url;
}

// Storage errors carry statusCode and the x-ms-error-code as `code`; map the ones people can fix.
function explain(err: unknown, action: string, role: string, resource: string): never {
  const e = err as { statusCode?: number; code?: string; name?: string; message?: string };
  if (e.statusCode === 403 && (e.code === "AuthorizationPermissionMismatch" || e.code === "AuthorizationFailure")) {
    throw new ExitError(
      `${action} was refused with 403 ${e.code}: the identity in use needs the '${role}' role on ${resource}. ` +
        `Grant it with az role assignment create --assignee <principal id> --role '${role}' --scope <resource id>.`,
      3,
    );
  }
  if (e.code === "QueueNotFound") {
    throw new ExitError(`queue ${resource} does not exist: check JOBS_QUEUE and the storage account settings`, 3);
  }
  if (e.name === "CredentialUnavailableError" || e.name === "AuthenticationError" || e.statusCode === 401) {
    throw new ExitError(
      `could not authenticate to storage (${firstLine(e.message)}): sign in with \`az login\`, ` +
        "or run where a managed identity is available (AZURE_CLIENT_ID selects a user-assigned one)",
      3,
    );
  }
  throw err;
}

function firstLine(text: string | undefined): string {
  return (text ?? "").trim().split("\n")[0] ?? "";
}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      id: { type: "string" },
      deployment: { type: "string" },
      system: { type: "string" },
      "reply-to": { type: "string" },
      lane: { type: "string" },
      timeout: { type: "string", default: "300" },
      "no-wait": { type: "boolean", default: false },
    },
  });
  const prompt = positionals.join(" ").trim();
  if (!prompt) {
    throw new ExitError(
      'usage: send-job.ts "prompt" [--id ID] [--deployment D] [--lane live|batch] [--timeout S] [--no-wait]',
      2,
    );
  }
  // An id of our own: the worker stores the result as <id>.json, so this is how we find it.
  const job: Job = { id: values.id ?? randomUUID().replaceAll("-", ""), prompt };
  if (!JOB_ID.test(job.id)) throw new ExitError("--id must be 1-128 characters from A-Z a-z 0-9 _ -", 2);
  if (values.system) job.system = values.system;
  if (values.deployment) job.deployment = values.deployment;
  if (values["reply-to"]) job.reply_to = values["reply-to"];
  if (values.lane !== undefined) {
    if (values.lane !== "live" && values.lane !== "batch") throw new ExitError("--lane is live or batch", 2);
    job.lane = values.lane;
  }
  Object.assign(job, traceContext());
  const timeoutSeconds = Number(values.timeout);
  if (!(timeoutSeconds >= 0)) throw new ExitError("--timeout must be a number of seconds", 2);

  const credential = new DefaultAzureCredential();
  const queue = new QueueServiceClient(serviceUrl("queue"), credential).getQueueClient(env("JOBS_QUEUE") ?? "jobs");
  const blobs = new BlobServiceClient(serviceUrl("blob"), credential);
  const results = blobs.getContainerClient(env("RESULTS_CONTAINER") ?? "results");

  let message = JSON.stringify(job);
  if (Buffer.byteLength(message) > CLAIM_CHECK_BYTES) {
    const payloads = blobs.getContainerClient(env("PAYLOADS_CONTAINER") ?? "job-payloads");
    const name = `${job.id}.json`;
    const upload = () =>
      payloads
        .getBlockBlobClient(name)
        .upload(message, Buffer.byteLength(message), { blobHTTPHeaders: { blobContentType: "application/json" } });
    try {
      try {
        await upload();
      } catch (err) {
        // No container yet: the infra creates it in Azure; locally (Azurite) make it once.
        if ((err as { code?: string }).code !== "ContainerNotFound") throw err;
        await payloads.createIfNotExists();
        await upload();
      }
    } catch (err) {
      explain(err, `uploading payload ${name}`, PAYLOAD_ROLE, payloads.url);
    }
    message = JSON.stringify({ id: job.id, payload: { blob: name } });
  }
  try {
    // Plain JSON text: the JS SDK sends it as-is, matching host.json messageEncoding "none".
    await queue.sendMessage(message);
  } catch (err) {
    explain(err, `sending to queue ${queue.name}`, SENDER_ROLE, queue.url);
  }
  if (values["no-wait"]) {
    console.log(job.id);
    return 0;
  }
  console.error(`submitted job ${job.id}; waiting up to ${timeoutSeconds} s for ${results.url}/${job.id}.json`);

  const blob = results.getBlobClient(`${job.id}.json`);
  const deadline = Date.now() + timeoutSeconds * 1000;
  let delay = 500;
  for (;;) {
    try {
      const result = JSON.parse((await blob.downloadToBuffer()).toString("utf8")) as Result;
      console.log(JSON.stringify(result, null, 2));
      if (result.status !== "succeeded") {
        console.error(`job ${job.id} failed: ${result.error?.code}: ${result.error?.message}`);
        return 1;
      }
      return 0;
    } catch (err) {
      // 404: no result yet (BlobNotFound), or no result at all yet (ContainerNotFound).
      if ((err as { statusCode?: number }).statusCode !== 404) {
        explain(err, `reading result ${job.id}.json`, READER_ROLE, results.url);
      }
    }
    const remaining = deadline - Date.now();
    if (remaining <= 0) {
      throw new ExitError(
        `no result after ${timeoutSeconds} s for job ${job.id}: the worker may be behind or stopped; ` +
          "check the Function App's logs and the poison queue, then wait again (python -m shared wait ID)",
        4,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(delay * (0.8 + Math.random() * 0.4), remaining)));
    delay = Math.min(delay * 2, 5000);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof ExitError) {
      console.error(`error: ${err.message}`);
      process.exitCode = err.code;
    } else {
      const e = err as { name?: string; message?: string };
      console.error(`error: ${e.name ?? "Error"}: ${firstLine(e.message)}`);
      process.exitCode = 5;
    }
  },
);
