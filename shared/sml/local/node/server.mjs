// fauxqs (SQS, SNS, S3) for the local stack: `node server.mjs <fauxqs app.js> <host> <port>`.
// Its own CLI listens on every interface; the stack's endpoint is for this machine only, so this
// listens on <host>. It exits when its parent (the stack) is gone, as the function containers do.
import { pathToFileURL } from "node:url";

const [appPath, host, port] = process.argv.slice(2);
const { buildApp } = await import(pathToFileURL(appPath).href);
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
