// The dashboard in a real browser (Debian's headless Chromium driven by playwright-core):
// topics show up, a live tail of a topic shows records a Kafka client (kafkajs) produces, and
// the throughput chart moves. Saves a screenshot.
// usage: node dashboard.js BOOTSTRAP HTTP_ADDR SCREENSHOT.png   → prints "OK dashboard"
const { chromium } = require("playwright-core");
const { Kafka, logLevel } = require("kafkajs");

const [bootstrap, http, screenshot] = process.argv.slice(2);
const base = `http://${http}`;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

async function rest(method, path, body) {
  const res = await fetch(base + path, {
    method,
    headers: { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json().catch(() => null) };
}

async function main() {
  const created = await rest("POST", "/topics", { name: "orders", partitions: 2 });
  if (created.status !== 201) throw new Error(`create: ${JSON.stringify(created)}`);

  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    // Everything the page loads comes from the broker: no CDN, no other host.
    const foreign = [];
    page.on("request", (r) => { if (!r.url().startsWith(base) && !r.url().startsWith(`ws://${http}`)) foreign.push(r.url()); });
    await page.goto(base + "/");
    await page.waitForSelector("#status.ok");
    await page.waitForSelector("#topics >> text=orders");
    const pointsBefore = Number(await page.getAttribute("#rates", "data-points"));

    await page.selectOption("#tail-topic", "orders");
    await page.waitForFunction(() => document.getElementById("tail-state").textContent.startsWith("following"));

    // A Kafka client produces while the page follows the topic.
    const kafka = new Kafka({ clientId: "dashboard-test", brokers: [bootstrap], logLevel: logLevel.ERROR });
    const producer = kafka.producer({ allowAutoTopicCreation: false });
    await producer.connect();
    const values = [];
    for (let round = 0; round < 5; round++) {
      const messages = [];
      for (let i = 0; i < 8; i++) {
        const value = `order-${round}-${i}`;
        values.push(value);
        messages.push({ key: `customer-${i % 3}`, value, partition: i % 2 });
      }
      await producer.send({ topic: "orders", acks: -1, messages });
      await new Promise((r) => setTimeout(r, 300));
    }
    await producer.disconnect();

    // The live tail shows every record, with its key.
    await page.waitForFunction((want) => {
      const shown = [...document.querySelectorAll("#tail tbody tr td:last-child")].map((td) => td.textContent);
      return want.every((v) => shown.includes(v));
    }, values, { timeout: 15000 });
    const keys = await page.$$eval("#tail tbody tr td:nth-child(4)", (tds) => tds.map((td) => td.textContent));
    if (!keys.includes("customer-0")) throw new Error(`keys in the tail: ${keys}`);

    // The chart took new points and saw the produce rate.
    await page.waitForFunction((before) => {
      const c = document.getElementById("rates");
      return Number(c.dataset.points) > before && Number(c.dataset.recordsIn) >= 0;
    }, pointsBefore, { timeout: 10000 });
    await page.waitForFunction(() => {
      // Some second of the last minute saw records come in.
      const c = document.getElementById("rates");
      return window.__sawRate = (window.__sawRate || Number(c.dataset.recordsIn) > 0);
    }, null, { timeout: 15000, polling: 200 });
    // The topic table shows the offsets the producer reached.
    await page.waitForFunction(() => {
      const cells = [...document.querySelectorAll("#topics tbody tr")].map((tr) => tr.children[3].textContent);
      return cells.filter((c) => c === "20").length === 2;
    }, null, { timeout: 10000 });

    await page.screenshot({ path: screenshot, fullPage: true });
    if (errors.length) throw new Error(`page errors: ${errors.join("; ")}`);
    if (foreign.length) throw new Error(`requests to other hosts: ${foreign.join(", ")}`);
  } finally {
    await browser.close();
  }
  console.log("OK dashboard");
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
