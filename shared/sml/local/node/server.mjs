// fauxqs (SQS, SNS, S3) for the local stack: `node server.mjs <fauxqs dist/app.js> <host> <port>`.
// Its own CLI listens on every interface; the stack's endpoint is for this machine only, so this
// listens on <host>. It exits when its parent (the stack) is gone, as the function containers do.
import { pathToFileURL } from "node:url";

const [appPath, host, port] = process.argv.slice(2);
const { buildApp } = await import(pathToFileURL(appPath).href);
const { SqsQueue } = await import(new URL("./sqs/sqsStore.js", pathToFileURL(appPath)).href);

// fauxqs 2.4.1 returns expired visibility timeouts to the queue only when it is received from (or
// long-polled), so GetQueueAttributes kept counting a message peeked with VisibilityTimeout=0
// (`sml dlq inspect`) as in flight until the next receive. AWS counts it visible at once.
const getAllAttributes = SqsQueue.prototype.getAllAttributes;
SqsQueue.prototype.getAllAttributes = function (requested) {
  this.processTimers();
  return getAllAttributes.call(this, requested);
};

// fauxqs 2.4.1 refuses characters beyond the BMP (emoji, U+10000-U+10FFFF) in a message body; SQS
// allows them. Its callers use INVALID_MESSAGE_BODY_CHAR.test(body), so that method is replaced.
const { INVALID_MESSAGE_BODY_CHAR } = await import(new URL("./sqs/sqsTypes.js", pathToFileURL(appPath)).href);
const invalidForSqs = /[^\x09\x0A\x0D\x20-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/u;
INVALID_MESSAGE_BODY_CHAR.test = (body) => invalidForSqs.test(body);

const app = buildApp({ logger: false });
await app.listen({ host, port: Number(port) });

const parent = process.ppid;
const stop = async () => {
  await app.close();
  process.exit(0);
};
setInterval(() => {
  if (process.ppid !== parent) process.exit(1);
}, 500).unref();
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
