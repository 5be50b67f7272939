// The web console in a real browser (headless chromium driven by playwright-core), as a user
// walks through it. Run by test_console.py:
//   node console.mjs ENDPOINT ACCESS_KEY SECRET OTHER_ACCESS_KEY OTHER_SECRET SCREENSHOT_DIR
// Prints one JSON line of facts the Python side checks, and exits non-zero on any failure.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";

const [endpoint, ak, sk, otherAk, otherSk, shots] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath,
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
const facts = {};
try {
  // The server's certificate comes from keyhold's own CA, which this browser does not know.
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  // The console runs no script: a dialog would mean injected script ran.
  page.on("dialog", (d) => {
    throw new Error(`a dialog opened: ${d.message()}`);
  });
  const consoleErrors = [];
  // Error pages (401, 403, 404) log "Failed to load resource"; anything else (a refused style
  // sheet or script under the CSP) is a fault.
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) {
      consoleErrors.push(m.text());
    }
  });
  const shot = (name) => page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
  const notice = () => page.locator("p.notice").innerText();
  const alert = () => page.locator("p.error").innerText();

  // Sign in: wrong credentials first.
  await page.goto(`${endpoint}/console/`);
  assert.match(page.url(), /\/console\/signin$/);
  await page.getByLabel("Access key ID").fill(ak);
  await page.getByLabel("Secret access key").fill("wrong-secret");
  await page.getByRole("button", { name: "Sign in" }).click();
  assert.match(await alert(), /wrong/);
  await shot("signin");
  await page.getByLabel("Access key ID").fill(ak);
  await page.getByLabel("Secret access key").fill(sk);
  await page.getByRole("button", { name: "Sign in" }).click();
  assert.match(page.url(), /\/console\/keys$/);
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "keyhold_console");
  assert.ok(session && session.httpOnly && session.sameSite === "Strict", JSON.stringify(cookies));
  // Secure over HTTPS (plain HTTP is served only on loopback, with --dev).
  assert.equal(session.secure, endpoint.startsWith("https://"));

  // The list shows the key made with boto3, its description escaped.
  const listed = await page.locator("table").innerText();
  assert.match(listed, /<script>alert\(1\)<\/script>/);
  await shot("keys");

  // Create a key with an alias and a tag.
  await page.getByRole("link", { name: "Create key" }).click();
  await page.getByLabel("Alias (alias/...)").fill("alias/browser-made");
  await page.getByLabel("Description").fill("made in the browser");
  await page.getByLabel("Tags, one key=value per line").fill("team=web");
  await page.getByRole("button", { name: "Create key" }).click();
  assert.equal(await notice(), "Key created.");
  const keyUrl = page.url().replace(/\?.*$/, "");
  const keyId = keyUrl.split("/").pop();
  facts.keyId = keyId;
  assert.match(await page.locator("h1").innerText(), /alias\/browser-made/);

  // Another alias, from the key's page.
  await page.getByLabel("New alias").fill("alias/browser-second");
  await page.getByRole("button", { name: "Add alias" }).click();
  assert.equal(await notice(), "Alias added.");
  assert.match(await page.locator("section", { has: page.locator("#aliases") }).innerText(),
    /alias\/browser-second/);

  // Another tag.
  await page.getByLabel("Tag key").fill("env");
  await page.getByLabel("Value", { exact: true }).fill("test");
  await page.getByRole("button", { name: "Save tag" }).click();
  assert.equal(await notice(), "Tag saved.");
  const tags = await page.locator("section", { has: page.locator("#tags") }).innerText();
  assert.match(tags, /team/);
  assert.match(tags, /env/);

  // Disable, then enable again.
  await page.getByRole("button", { name: "Disable", exact: true }).click();
  assert.equal(await notice(), "Key disabled.");
  assert.match(await page.locator("dl.facts").innerText(), /Disabled/);
  await page.getByRole("button", { name: "Enable", exact: true }).click();
  assert.equal(await notice(), "Key enabled.");

  // Rotate on demand and see the history.
  await page.getByRole("button", { name: "Rotate now" }).click();
  assert.match(await notice(), /Rotation/);
  const history = await page.locator("table", { hasText: "Key material ID" }).innerText();
  assert.match(history, /ON_DEMAND/);
  assert.match(history, /CURRENT/);
  await shot("key");
  await page.screenshot({ path: `${shots}/readme.png` });

  // A bad policy shows AWS's error and changes nothing.
  const before = await page.getByLabel("Policy document (JSON)").inputValue();
  await page.getByLabel("Policy document (JSON)").fill('{"Version": "2012-10-17", "Statement": [');
  await page.getByRole("button", { name: "Save policy" }).click();
  assert.match(await alert(), /MalformedPolicyDocumentException/);
  await page.goto(keyUrl);
  assert.equal(await page.getByLabel("Policy document (JSON)").inputValue(), before);
  // A good edit is kept.
  const edited = JSON.parse(before);
  edited.Statement[0].Sid = "Edited in the console";
  await page.getByLabel("Policy document (JSON)").fill(JSON.stringify(edited));
  await page.getByRole("button", { name: "Save policy" }).click();
  assert.equal(await notice(), "Key policy saved.");
  assert.match(await page.getByLabel("Policy document (JSON)").inputValue(), /Edited in the console/);

  // Schedule deletion (with confirmation), then cancel it.
  await page.getByRole("link", { name: "Schedule key deletion" }).click();
  await page.getByLabel("Waiting period (7 to 30 days)").fill("7");
  await page.getByLabel(/I understand/).check();
  await shot("schedule-deletion");
  await page.getByRole("button", { name: "Schedule deletion" }).click();
  assert.equal(await notice(), "Key deletion scheduled.");
  assert.match(await page.locator("dl.facts").innerText(), /PendingDeletion/);
  await page.getByRole("button", { name: "Cancel key deletion" }).click();
  assert.match(await notice(), /cancelled/);

  // A forged form post (no CSRF token) is refused and changes nothing.
  const forged = await page.request.post(`${keyUrl}/enable`, { form: { x: "1" } });
  assert.equal(forged.status(), 403);
  assert.match(await forged.text(), /CSRF/);
  await page.goto(keyUrl);
  assert.match(await page.locator("dl.facts").innerText(), /Disabled/);

  // The calls are in the audit trail.
  await page.getByRole("link", { name: "Audit trail" }).click();
  await page.getByLabel("Event name").fill("DisableKey");
  await page.getByLabel("Key (ID, ARN or alias)").fill("alias/browser-made");
  await page.getByRole("button", { name: "Search" }).click();
  const trail = await page.locator("table").innerText();
  assert.match(trail, /DisableKey/);
  await shot("audit");
  await page.locator("table a").first().click();
  const event = await page.locator("pre").innerText();
  assert.match(event, /"eventName": "DisableKey"/);
  assert.match(event, new RegExp(keyId));
  await page.goto(`${endpoint}/console/audit`);
  await page.getByRole("button", { name: "Verify the chain now" }).click();
  assert.match(await page.locator("#main").innerText(), /Last verification/);

  // aws/s3 under AWS managed keys, after its first use; read-only.
  await page.getByRole("link", { name: "AWS managed keys" }).click();
  await shot("managed");
  await page.getByRole("row", { name: /alias\/aws\/s3/ }).getByRole("link").click();
  const facts1 = await page.locator("dl.facts").innerText();
  assert.match(facts1, /AWS/);
  assert.equal(await page.getByRole("button", { name: "Disable", exact: true }).count(), 0);
  assert.equal(await page.getByRole("button", { name: "Save policy" }).count(), 0);
  await shot("managed-key");

  // Unknown key ids in URLs: a clear page, no 500.
  const missing = await page.goto(`${endpoint}/console/keys/00000000-0000-0000-0000-000000000000`);
  assert.equal(missing.status(), 404);
  assert.match(await page.locator("main").innerText(), /NotFoundException/);

  // Sign out: the session is gone.
  await page.goto(`${endpoint}/console/keys`);
  await page.getByRole("button", { name: "Sign out" }).click();
  assert.match(page.url(), /\/console\/signin$/);
  await page.goto(`${endpoint}/console/keys`);
  assert.match(page.url(), /\/console\/signin$/);

  // A principal of another account sees none of the first account's keys.
  await page.getByLabel("Access key ID").fill(otherAk);
  await page.getByLabel("Secret access key").fill(otherSk);
  await page.getByRole("button", { name: "Sign in" }).click();
  const theirs = await page.locator("main").innerText();
  assert.doesNotMatch(theirs, new RegExp(keyId));
  const foreign = await page.goto(keyUrl);
  assert.equal(foreign.status(), 404);
  await page.goto(`${endpoint}/console/audit`);
  assert.doesNotMatch(await page.locator("main").innerText(), new RegExp(keyId));

  facts.consoleErrors = consoleErrors;
  console.log(JSON.stringify(facts));
} finally {
  await browser.close();
}
