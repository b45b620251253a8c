// Publish one igsend message the way a Node app would, and wait for Celery's result.
//   node send.js REDIS_URL '{"kind": "text", "recipient": "IGSID", "text": "Hi"}' [TASK_ID]
// Prints one JSON line: {"ok": true, "result": {...}} or {"ok": false, "exc_type": ..., "exc_message": [...]}.
const celery = require("celery-node");

const [url, document, taskId] = process.argv.slice(2);
const client = celery.createClient(url, url, "igsend");
const result = client.sendTask("igsend.send_message", [JSON.parse(document)], undefined, taskId);
result
  .get(30000)
  .then((value) => console.log(JSON.stringify({ ok: true, id: result.taskId, result: value })))
  .catch((error) => console.log(JSON.stringify({ ok: false, id: result.taskId, status: error.message,
                                                 exc_type: error.exc_type, exc_message: error.exc_message })))
  .finally(() => client.disconnect());
