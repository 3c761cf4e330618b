// A callback receiver, as a team would write one with the Standard Webhooks reference library:
// it verifies every delivery's signature, answers the first FAILS deliveries with a 503, and
// exits 0 once it has taken one whose signature verified (printing its message), 1 otherwise.
// With TLS_KEY and TLS_CERT (PEM files) in its environment it serves HTTPS.
//   node receiver.mjs SECRET_FILE PORT_FILE FAILS
import fs from "node:fs";
import http from "node:http";
import https from "node:https";
import { Webhook } from "standardwebhooks";

const [secretFile, portFile, failsText] = process.argv.slice(2);
// The first line is the current secret; the library takes the whsec_ form as it is.
const secret = fs.readFileSync(secretFile, "utf8").split("\n").find((l) => l.startsWith("whsec_")).trim();
const webhook = new Webhook(secret);
let fails = Number(failsText);
let seen = 0;
const timer = setTimeout(() => {
  console.error(`receiver: no verified delivery within 60 s (${seen} seen)`);
  process.exit(1);
}, 60000);

const tls = process.env.TLS_KEY
  ? { key: fs.readFileSync(process.env.TLS_KEY), cert: fs.readFileSync(process.env.TLS_CERT) }
  : null;
const handler = (req, res) => {
  let body = "";
  req.on("data", (d) => (body += d));
  req.on("end", () => {
    ++seen;
    let message;
    try {
      message = webhook.verify(body, req.headers);
    } catch (e) {
      console.error(`receiver: delivery ${seen} does not verify: ${e.message}`);
      res.writeHead(400).end();
      process.exit(1);
    }
    if (fails > 0) {
      --fails;
      console.log(`receiver: delivery ${seen} verified (${req.headers["webhook-id"]}), answered 503`);
      res.writeHead(503).end();
      return;
    }
    res.writeHead(204).end();
    console.log(`receiver: delivery ${seen} verified and taken: ${JSON.stringify(message)}`);
    clearTimeout(timer);
    server.close();
  });
};
const server = tls ? https.createServer(tls, handler) : http.createServer(handler);
server.listen(0, "127.0.0.1", () => fs.writeFileSync(portFile, String(server.address().port)));
