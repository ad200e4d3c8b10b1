// kafkajs against weir: create a topic, produce keyed records with headers (gzip too), then
// check the partition offsets. Consuming with kafkajs needs consumer groups (a later issue).
// usage: node kafkajs.js BOOTSTRAP   → prints "OK kafkajs <records>"
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
  for (const compression of [CompressionTypes.None, CompressionTypes.GZIP]) {
    const messages = [];
    for (let i = 0; i < 100; i++) {
      messages.push({ key: `k${i}`, value: `v${i}`, partition: i % 2, headers: { trace: `t${i}` } });
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
  await admin.deleteTopics({ topics: [topic] });
  await admin.disconnect();
  console.log(`OK kafkajs ${sent}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
