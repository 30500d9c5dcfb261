// The web client in a real browser: headless Chromium driven by playwright-core.
// Run by tests/web.rs with ZMS (the binary), ZMS_SERVER (the message server's HOST:PORT),
// CHROMIUM (the browser) and, optionally, SHOTS (a folder for the README's screenshots).
//
// Two browser users and one terminal user chat in one group; HTML sent as a message shows
// as text; the gateway restarts, and a message typed while it was down is sent once and
// what was said meanwhile arrives; a user edits with Up and deletes with a button, others
// see "(edited)" and "(deleted)", a terminal user's edit shows the same, and search finds
// messages, its words marked. Every wait is for a DOM state, bounded by WAIT.
"use strict";

const { chromium } = require("playwright-core");
const { spawn, execFileSync } = require("node:child_process");
const readline = require("node:readline");
const path = require("node:path");

const WAIT = 30000;
const ZMS = process.env.ZMS;
const SERVER = process.env.ZMS_SERVER;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SHOTS = process.env.SHOTS;

const children = [];

function step(text) { console.log("step: " + text); }

// `zms web` on `bind`; resolves with the child and its URL once it says where it listens.
function startGateway(bind) {
  return new Promise((resolve, reject) => {
    const child = spawn(ZMS, ["web", "--bind", bind, "--server", SERVER], { stdio: ["ignore", "pipe", "inherit"] });
    children.push(child);
    const timer = setTimeout(() => reject(new Error("zms web said nothing")), WAIT);
    readline.createInterface({ input: child.stdout }).on("line", (line) => {
      const m = /^listening on (http:\/\/\S+)/.exec(line);
      if (m) { clearTimeout(timer); resolve({ child, url: m[1] }); }
    });
    child.on("exit", (code) => reject(new Error("zms web exited with " + code)));
  });
}

function stopGateway(g) {
  return new Promise((resolve) => {
    g.child.removeAllListeners("exit");
    g.child.on("exit", () => resolve());
    g.child.kill("SIGTERM");
  });
}

// A terminal user's one-shot command.
function zms(...args) {
  return execFileSync(ZMS, [...args, "--server", SERVER, "--name", "carol"], { encoding: "utf8", timeout: WAIT });
}

async function signIn(browser, url, name, viewport) {
  // The page's Content-Security-Policy is bypassed: then HTML that the page let through
  // would run here, so the injection check below tests the page itself, not the policy
  // (tests/web.rs checks the policy is sent).
  const context = await browser.newContext({ viewport, bypassCSP: true });
  const page = await context.newPage();
  page.on("pageerror", (e) => fail(new Error(name + "'s page: " + e.message)));
  await page.goto(url);
  await page.getByLabel("Name").fill(name);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#group-list button", { hasText: "#general" }).waitFor({ timeout: WAIT });
  await page.locator("#group-list button", { hasText: "#general" }).click();
  const join = page.getByRole("button", { name: "Join", exact: true });
  if (await join.isVisible()) await join.click();
  await page.locator("#composer-text:not([disabled])").waitFor({ timeout: WAIT });
  return page;
}

async function say(page, text) {
  await page.locator("#composer-text").fill(text);
  await page.locator("#composer-text").press("Enter");
}

// Waits until a message with exactly this text is on the page.
async function sees(page, text) {
  await page.waitForFunction(
    (t) => [...document.querySelectorAll("#messages li:not(.pending) .text")].some((e) => e.textContent === t),
    text, { timeout: WAIT });
}

async function count(page, text) {
  return page.evaluate(
    (t) => [...document.querySelectorAll("#messages li .text")].filter((e) => e.textContent === t).length, text);
}

async function main() {
  const gateway = await startGateway("127.0.0.1:0");
  const port = new URL(gateway.url).port;
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu"] });
  try {
    step("two browser users sign in and join general");
    const alice = await signIn(browser, gateway.url, "alice", { width: 1280, height: 800 });
    const bob = await signIn(browser, gateway.url, "bob", { width: 390, height: 844 });

    step("the page's Z85 agrees with the specification's test vector (keys in secure mode)");
    const z = await alice.evaluate(() => z85(new Uint8Array([0x86, 0x4f, 0xd2, 0x6f, 0xb5, 0x59, 0xf7, 0x5b])));
    if (z !== "HelloWorld") throw new Error("z85 gave " + z);

    step("the terminal user joins; all three chat");
    zms("join", "general");
    await say(alice, "hello from alice");
    await sees(bob, "hello from alice");
    await say(bob, "hi alice, bob here");
    await sees(alice, "hi alice, bob here");
    zms("send", "general", "carol from the terminal, @alice");
    await sees(alice, "carol from the terminal, @alice");
    await sees(bob, "carol from the terminal, @alice");
    await alice.locator("#messages li.mention").first().waitFor({ timeout: WAIT });
    const history = zms("history", "general");
    for (const t of ["hello from alice", "hi alice, bob here"]) {
      if (!history.includes(t)) throw new Error("zms history lacks " + t + ":\n" + history);
    }

    step("a direct message from alice to bob, unseen by anyone else");
    await alice.getByLabel("Message a user").fill("bob");
    await alice.getByRole("button", { name: "Open" }).click();
    await alice.locator("#room-name", { hasText: "@bob" }).waitFor({ timeout: WAIT });
    await say(alice, "a word for bob alone");
    await sees(alice, "a word for bob alone");
    if (await bob.locator("#toggle-groups").isVisible()) await bob.locator("#toggle-groups").click();
    await bob.locator("#dm-list button", { hasText: "@alice" }).click({ timeout: WAIT });
    await sees(bob, "a word for bob alone");
    let peeked = "";
    try { peeked = zms("history", "@alice@bob"); } catch (e) { peeked = String(e.stderr || e); }
    if (peeked.includes("a word for bob alone")) throw new Error("carol read the conversation");
    // On a phone the list folds away once a conversation is picked.
    if (!(await bob.locator("#group-list").isVisible())) await bob.locator("#toggle-groups").click();
    await bob.locator("#group-list button", { hasText: "#general" }).click({ timeout: WAIT });
    await alice.locator("#group-list button", { hasText: "#general" }).click();
    await alice.locator("#room-name", { hasText: "#general" }).waitFor({ timeout: WAIT });

    step("HTML and script in a message show as text");
    const hostile = "<img src=x onerror=\"window.pwned=1\"><script>window.pwned=2</script><b>bold?</b>";
    await say(bob, hostile);
    await sees(alice, hostile);
    const harm = await alice.evaluate(() => ({
      pwned: window.pwned,
      tags: document.querySelectorAll("#messages img, #messages script, #messages b").length,
    }));
    if (harm.pwned !== undefined || harm.tags !== 0) throw new Error("HTML ran: " + JSON.stringify(harm));

    step("members and completion");
    await alice.getByRole("button", { name: "Members" }).click();
    await alice.locator("#member-list li", { hasText: "bob" }).waitFor({ timeout: WAIT });
    await alice.locator("#composer-text").fill("ca");
    await alice.locator("#composer-text").press("Tab");
    const completed = await alice.locator("#composer-text").inputValue();
    if (completed !== "carol: ") throw new Error("Tab completed to " + JSON.stringify(completed));
    await alice.locator("#composer-text").fill("");
    await alice.getByRole("button", { name: "Members" }).click();

    if (SHOTS) {
      step("screenshots");
      await alice.screenshot({ path: path.join(SHOTS, "web-desktop.png") });
      await bob.screenshot({ path: path.join(SHOTS, "web-phone.png") });
    }

    step("the gateway restarts; nothing is lost");
    await stopGateway(gateway);
    await alice.locator("#status.down").waitFor({ timeout: WAIT });
    await say(alice, "typed while the gateway was down");
    await alice.locator("#messages li.pending", { hasText: "typed while the gateway was down" }).waitFor({ timeout: WAIT });
    zms("send", "general", "said while the gateway was down");
    await startGateway("127.0.0.1:" + port);
    await sees(alice, "said while the gateway was down");
    await sees(alice, "typed while the gateway was down");
    await sees(bob, "typed while the gateway was down");
    await sees(bob, "said while the gateway was down");
    await alice.locator("#messages li.pending").waitFor({ state: "detached", timeout: WAIT });
    const stored = zms("history", "general").split("\n").filter((l) => l.includes("typed while the gateway was down"));
    if (stored.length !== 1) throw new Error("stored " + stored.length + " times:\n" + stored.join("\n"));
    if ((await count(bob, "typed while the gateway was down")) !== 1) throw new Error("bob sees it twice");

    step("Up edits the last message; Escape cancels");
    await alice.locator("#composer-text").press("ArrowUp");
    const recalled = await alice.locator("#composer-text").inputValue();
    if (recalled !== "typed while the gateway was down") throw new Error("Up gave " + JSON.stringify(recalled));
    await alice.locator("#editing").waitFor({ timeout: WAIT });
    await alice.locator("#composer-text").press("Escape");
    if ((await alice.locator("#composer-text").inputValue()) !== "") throw new Error("Escape left the text");
    await alice.locator("#editing").waitFor({ state: "hidden", timeout: WAIT });

    step("an edit with Up reaches the other browser as (edited), its HTML as text");
    const edited = "typed while down, <img src=x onerror=\"window.pwned=3\"><b>fixed</b>";
    await alice.locator("#composer-text").press("ArrowUp");
    await alice.locator("#composer-text").fill(edited);
    await alice.locator("#composer-text").press("Enter");
    await sees(bob, edited);
    await sees(alice, edited);
    await bob.locator("#messages li", { hasText: edited }).locator(".edited", { hasText: "(edited)" }).waitFor({ timeout: WAIT });
    if ((await count(bob, "typed while the gateway was down")) !== 0) throw new Error("bob still sees the old text");
    for (const page of [alice, bob]) {
      const harm = await page.evaluate(() => ({
        pwned: window.pwned,
        tags: document.querySelectorAll("#messages img, #messages script, #messages b").length,
      }));
      if (harm.pwned !== undefined || harm.tags !== 0) throw new Error("HTML in an edit ran: " + JSON.stringify(harm));
    }
    if (!zms("history", "general").includes("fixed")) throw new Error("the terminal does not see the edit");

    const others = await bob.locator("#messages li", { hasText: edited }).getByRole("button").count();
    if (others !== 0) throw new Error("bob has " + others + " buttons on alice's message");

    step("a message is deleted from the keyboard, by its labelled button");
    const own = alice.locator("#messages li", { hasText: "hello from alice" });
    await own.getByRole("button", { name: "Delete your message: hello from alice" }).focus();
    await alice.keyboard.press("Enter");
    await bob.locator('#messages li.deleted .gone').first().waitFor({ timeout: WAIT });
    if ((await count(bob, "hello from alice")) !== 0) throw new Error("bob still sees the deleted message");
    await alice.locator("#messages li.deleted").first().waitFor({ timeout: WAIT });

    step("a terminal user's edit shows in the browser, not as a raw change");
    const sent = /#(\d+) at /.exec(zms("send", "general", "carol says teh thing"));
    if (!sent) throw new Error("zms send said no seq");
    await sees(bob, "carol says teh thing");
    zms("edit", "general", sent[1], "carol says the thing");
    await sees(bob, "carol says the thing");
    const raw = await bob.evaluate(() => document.getElementById("messages").textContent);
    if (/\u0001|\bedit \d/.test(raw)) throw new Error("a raw change shows: " + JSON.stringify(raw));

    step("search finds messages in the user's groups, words marked; a hit opens its group");
    await bob.getByLabel("Search your groups").fill("bob alone");
    await bob.getByLabel("Search your groups").press("Enter");
    const hit = bob.locator("#hit-list button.hit", { hasText: "a word for bob alone" });
    await hit.waitFor({ timeout: WAIT });
    const marks = await hit.locator("mark").allTextContents();
    if (marks.join(",") !== "bob,alone") throw new Error("marked " + JSON.stringify(marks));
    await hit.click();
    await bob.locator("#room-name", { hasText: "@alice" }).waitFor({ timeout: WAIT });
    await bob.locator("#messages li.found", { hasText: "a word for bob alone" }).waitFor({ timeout: WAIT });
    await bob.getByRole("button", { name: "Close" }).click();
    await alice.getByLabel("Search your groups").fill("fixed");
    await alice.getByLabel("Search your groups").press("Enter");
    await alice.locator("#hit-list button.hit mark", { hasText: "fixed" }).waitFor({ timeout: WAIT });
    const hitHarm = await alice.evaluate(() => ({
      pwned: window.pwned,
      tags: document.querySelectorAll("#hit-list img, #hit-list script, #hit-list b").length,
    }));
    if (hitHarm.pwned !== undefined || hitHarm.tags !== 0) throw new Error("HTML in a hit ran: " + JSON.stringify(hitHarm));
    if (SHOTS) await alice.screenshot({ path: path.join(SHOTS, "web-search.png") });
    console.log("browser test passed");
  } finally {
    await browser.close();
  }
}

function fail(e) {
  console.error(e);
  for (const c of children) c.kill("SIGKILL");
  process.exit(1);
}
process.on("uncaughtException", fail);
// Never longer than the Rust test's bound, whatever hangs.
setTimeout(() => fail(new Error("browser test took over 4 minutes")), 240000).unref();

main()
  .then(() => { for (const c of children) c.kill("SIGKILL"); process.exit(0); })
  .catch(fail);
