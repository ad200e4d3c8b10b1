// kafkajs against weir: create a topic, produce keyed records with headers and timestamps
// (gzip too), check the partition offsets, read every record back with a group consumer
// (key, value, headers, timestamp, partition, contiguous offsets), and check the committed
// offsets. usage: node kafkajs.js BOOTSTRAP   → prints "OK kafkajs <records>"
const { Kafka, CompressionTypes, logLevel } = require("kafkajs");

async function main() {
  const kafka = new Kafka({ clientId: "weir-test", brokers: [process.argv[2]], logLevel: logLevel.ERROR });
  const admin = kafka.admin();
  await admin.connect();
  const topic = `kafkajs-${Date.now()}`;
  const created = await admin.createTopics({ topics: [{ topic, numPartitions: 2 }], waitForLeaders: true });
  if (!created) throw new Error("topic not created");
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  let sent = 0;
  const base = Date.now() - 60000;
  const expected = new Map(); // "partition/offset" → record
  const next = [0, 0];
  for (const compression of [CompressionTypes.None, CompressionTypes.GZIP]) {
    const messages = [];
    for (let j = 0; j < 100; j++) {
      const i = sent + j;
      const m = { key: `k${i}`, value: `v${i}`, partition: i % 2, headers: { trace: `t${i}` }, timestamp: String(base + i) };
      messages.push(m);
      expected.set(`${m.partition}/${next[m.partition]++}`, m);
    }
    const result = await producer.send({ topic, acks: -1, compression, messages });
    for (const r of result) {
      if (r.errorCode !== 0) throw new Error(`produce error ${JSON.stringify(r)}`);
    }
    sent += messages.length;
  }
  await producer.disconnect();
  const offsets = await admin.fetchTopicOffsets(topic);
  const total = offsets.reduce((n, p) => n + Number(p.high) - Number(p.low), 0);
  if (total !== sent) throw new Error(`offsets ${JSON.stringify(offsets)} hold ${total}, sent ${sent}`);
  for (const p of offsets) {
    if (Number(p.low) !== 0 || Number(p.high) !== sent / 2) throw new Error(`partition ${JSON.stringify(p)}`);
  }
  const groupId = `${topic}-group`;
  const consumer = kafka.consumer({ groupId, sessionTimeout: 10000, heartbeatInterval: 500 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const seen = new Map();
  let done;
  const finished = new Promise((resolve) => { done = resolve; });
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      const key = `${partition}/${message.offset}`;
      const want = expected.get(key);
      if (!want) throw new Error(`unexpected record ${key}`);
      const got = {
        key: message.key.toString(),
        value: message.value.toString(),
        trace: message.headers.trace.toString(),
        timestamp: message.timestamp,
      };
      if (got.key !== want.key || got.value !== want.value || got.trace !== want.headers.trace || got.timestamp !== want.timestamp) {
        throw new Error(`record ${key}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
      }
      seen.set(key, true);
      if (seen.size === sent) done();
    },
  });
  const timeout = setTimeout(() => done(), 60000);
  await finished;
  clearTimeout(timeout);
  if (seen.size !== sent) throw new Error(`consumed ${seen.size} of ${sent}`);
  await consumer.stop();
  await consumer.disconnect(); // commits the consumed offsets and leaves the group
  const committed = await admin.fetchOffsets({ groupId, topics: [topic] });
  for (const p of committed[0].partitions) {
    if (Number(p.offset) !== sent / 2) throw new Error(`committed ${JSON.stringify(committed)}`);
  }
  await admin.deleteGroups([groupId]);
  await admin.deleteTopics({ topics: [topic] });
  await admin.disconnect();
  console.log(`OK kafkajs ${sent}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
