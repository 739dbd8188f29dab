// Eclipse Tahu's JavaScript Sparkplug B codec (npm sparkplug-payload), an implementation
// independent of ours, for the tests.
//   node codec.js decode: stdin a JSON array of base64 payloads; stdout a JSON array of decoded
//     payloads, with 64-bit integers (Long {low, high}) as decimal strings and bytes as base64.
//   node codec.js encode: stdin a JSON array of payload objects in the library's form; stdout a
//     JSON array of base64 payloads.
//   node codec.js decode-data: stdin a JSON array of {payload: base64, types: {alias: datatype code}};
//     DATA metrics carry no datatype, so, as a host application does, each metric is given the
//     datatype its alias had in the birth before the library decodes it. Output as for decode.
"use strict";
const Long = require("long");
const sparkplug = require("sparkplug-payload").get("spBv1.0");
const ProtoPayload = require("sparkplug-payload/lib/sparkplugPayloadProto").org.eclipse.tahu.protobuf.Payload;

function withBirthTypes(buffer, types) {
  const message = ProtoPayload.decode(buffer);
  for (const metric of message.metrics) {
    const alias = metric.alias === null || metric.alias === undefined ? undefined : metric.alias.toString();
    if (alias !== undefined && types[alias] !== undefined && !metric.datatype) metric.datatype = types[alias];
  }
  return ProtoPayload.encode(message).finish();
}

function plain(value) {
  if (Long.isLong(value)) return value.toString();
  if (value instanceof Uint8Array) return Buffer.from(value).toString("base64");
  if (Array.isArray(value)) return value.map(plain);
  if (value !== null && typeof value === "object") {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = plain(v);
    return out;
  }
  return value;
}

const chunks = [];
process.stdin.on("data", (c) => chunks.push(c));
process.stdin.on("end", () => {
  const items = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  const mode = process.argv[2];
  let out;
  if (mode === "decode") {
    out = items.map((b64) => plain(sparkplug.decodePayload(Buffer.from(b64, "base64"))));
  } else if (mode === "decode-data") {
    out = items.map((item) => plain(sparkplug.decodePayload(
      withBirthTypes(Buffer.from(item.payload, "base64"), item.types))));
  } else if (mode === "encode") {
    out = items.map((payload) => Buffer.from(sparkplug.encodePayload(payload)).toString("base64"));
  } else {
    process.stderr.write("usage: node codec.js decode|decode-data|encode\n");
    process.exit(2);
  }
  process.stdout.write(JSON.stringify(out));
});
