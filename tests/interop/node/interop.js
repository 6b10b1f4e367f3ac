// node-consul (npm `consul` 2.0.1) interop cases against a running dcgate agent.
// usage: node interop.js HOST PORT NODE_NAME
// Prints one JSON line per case: {"name": ..., "ok": true|false, "error": "..."}; the Python
// wrapper tests/interop/test_node_consul.py turns each line into one test. Every wait is bounded.
"use strict";

const EventEmitter = require("events");
const http = require("http");
const net = require("net");
const assert = require("assert/strict");
const Consul = require("consul");

const [host, portStr, nodeName] = process.argv.slice(2);
const port = Number(portStr);
const consul = new Consul({ host, port });
const other = new Consul({ host, port });
// papi hands the response to the caller only through an EventEmitter ctx with includeResponse.
function withRes() {
  const ctx = new EventEmitter();
  ctx.includeResponse = true;
  return ctx;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what, fn, timeoutMs, stepMs = 250) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (let i = 0; i < 100000; i++) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() >= deadline) break;
    await sleep(stepMs);
  }
  throw new Error(`timed out waiting for ${what} (last: ${last})`);
}

async function checkStatus(id) {
  const checks = await consul.agent.check.list();
  return checks[id] && checks[id].Status;
}

const cases = {
  async tcp_check() {
    const srv = net.createServer((s) => s.end());
    await new Promise((r) => srv.listen(0, host, r));
    const p = srv.address().port;
    try {
      await consul.agent.service.register({
        name: "nodetcp", id: "nodetcp1", address: host, port: p, tags: ["tcp"],
        check: { tcp: `${host}:${p}`, interval: "1s", timeout: "2s" },
      });
      const svcs = await consul.agent.service.list();
      assert.equal(svcs.nodetcp1.Port, p);
      await waitFor("tcp passing", async () => (await checkStatus("service:nodetcp1")) === "passing", 30000);
    } finally {
      await new Promise((r) => srv.close(r));
    }
    await waitFor("tcp critical", async () => (await checkStatus("service:nodetcp1")) === "critical", 30000);
    await consul.agent.service.deregister("nodetcp1");
    assert.equal((await consul.agent.service.list()).nodetcp1, undefined);
  },

  async http_check() {
    const srv = http.createServer((req, res) => res.end("ok"));
    await new Promise((r) => srv.listen(0, host, r));
    const p = srv.address().port;
    try {
      await consul.agent.service.register({
        name: "nodehttp", id: "nodehttp1", port: p,
        checks: [{ http: `http://${host}:${p}/health`, interval: "1s", timeout: "2s" },
                 { ttl: "60s", status: "passing" }],
      });
      await waitFor("http passing", async () => (await checkStatus("service:nodehttp1:1")) === "passing", 30000);
      assert.equal(await checkStatus("service:nodehttp1:2"), "passing");
    } finally {
      srv.closeAllConnections && srv.closeAllConnections();
      await new Promise((r) => srv.close(r));
    }
    await waitFor("http critical", async () => (await checkStatus("service:nodehttp1:1")) === "critical", 30000);
    await consul.agent.service.deregister("nodehttp1");
  },

  async ttl_check() {
    await consul.agent.service.register({ name: "nodettl", id: "nodettl1", check: { ttl: "60s" } });
    assert.equal(await checkStatus("service:nodettl1"), "critical");
    await consul.agent.check.pass({ id: "service:nodettl1", note: "fine" });
    const c = (await consul.agent.check.list())["service:nodettl1"];
    assert.equal(c.Status, "passing");
    assert.equal(c.Output, "fine");
    await consul.agent.check.warn("service:nodettl1");
    assert.equal(await checkStatus("service:nodettl1"), "warning");
    await consul.agent.check.fail("service:nodettl1");
    assert.equal(await checkStatus("service:nodettl1"), "critical");
    await consul.agent.check.register({ name: "node extra", id: "nodeextra", serviceid: "nodettl1", ttl: "30s" });
    assert.equal((await consul.agent.check.list()).nodeextra.ServiceID, "nodettl1");
    await consul.agent.check.deregister("nodeextra");
    await assert.rejects(consul.agent.check.pass("no-such-check"), (e) => e.response && e.response.statusCode === 404);
  },

  async health_service_passing_tag() {
    for (const [id, tags, pass] of [["nh1", ["blue", "v1"], true], ["nh2", ["green"], true], ["nh3", ["blue"], false]]) {
      await consul.agent.service.register({ name: "nodehealth", id, tags, port: 80, check: { ttl: "60s" } });
      if (pass) await consul.agent.check.pass(`service:${id}`);
    }
    const ids = (lst) => lst.map((e) => e.Service.ID).sort();
    assert.deepEqual(ids(await consul.health.service("nodehealth")), ["nh1", "nh2", "nh3"]);
    assert.deepEqual(ids(await consul.health.service({ service: "nodehealth", passing: true })), ["nh1", "nh2"]);
    assert.deepEqual(ids(await consul.health.service({ service: "nodehealth", tag: "blue" })), ["nh1", "nh3"]);
    assert.deepEqual(ids(await consul.health.service({ service: "nodehealth", tag: "blue", passing: true })), ["nh1"]);
    const [res, data] = await consul.health.service({ service: "nodehealth", ctx: withRes() });
    assert.ok(BigInt(res.headers["x-consul-index"]) > 0n);
    assert.equal(data.length, 3);
    const any = await consul.health.state("any");
    assert.ok(any.some((c) => c.CheckID === "serfHealth"));
    const node = await consul.health.node(nodeName);
    assert.ok(node.some((c) => c.CheckID === "serfHealth"));
    assert.equal((await consul.health.checks("nodehealth")).length, 3);
  },

  async catalog_services() {
    await consul.agent.service.register({ name: "nodecat", id: "nodecat1", tags: ["a", "b"], port: 82 });
    const svcs = await consul.catalog.service.list();
    assert.deepEqual(svcs.consul, []);
    assert.deepEqual([...svcs.nodecat].sort(), ["a", "b"]);
    assert.deepEqual(await consul.catalog.datacenters(), ["dc1"]);
    const nodes = await consul.catalog.node.list();
    assert.ok(nodes.some((n) => n.Node === nodeName));
  },

  async catalog_service() {
    await consul.agent.service.register({ name: "nodecs", id: "nodecs1", tags: ["x"], port: 83 });
    const lst = await consul.catalog.service.nodes("nodecs");
    assert.deepEqual(lst.map((s) => [s.ServiceID, s.ServicePort, s.Node]), [["nodecs1", 83, nodeName]]);
    assert.equal((await consul.catalog.service.nodes({ service: "nodecs", tag: "x" })).length, 1);
    assert.deepEqual(await consul.catalog.service.nodes({ service: "nodecs", tag: "nope" }), []);
    await consul.catalog.register({ node: "nodeext", address: "192.0.2.60", service: { service: "nodeextsvc", port: 91 } });
    const n = await consul.catalog.node.services("nodeext");
    assert.equal(n.Services.nodeextsvc.Port, 91);
    await consul.catalog.deregister({ node: "nodeext" });
    assert.ok((await consul.catalog.node.services("nodeext")) == null); // body null
  },

  async kv_cas_flags() {
    assert.equal(await consul.kv.set({ key: "nodekv/a", value: "1", cas: 0 }), true);
    assert.equal(await consul.kv.set({ key: "nodekv/a", value: "x", cas: 0 }), undefined); // papi: JSON false -> undefined
    const e = await consul.kv.get("nodekv/a");
    assert.equal(e.Value, "1");
    assert.equal(await consul.kv.set({ key: "nodekv/a", value: "2", cas: e.ModifyIndex }), true);
    assert.equal(await consul.kv.set({ key: "nodekv/a", value: "3", cas: e.ModifyIndex }), undefined);
    assert.equal((await consul.kv.get("nodekv/a")).Value, "2");
    assert.equal(await consul.kv.set({ key: "nodekv/f", value: "v", flags: 12345 }), true);
    assert.equal((await consul.kv.get("nodekv/f")).Flags, 12345);
    const raw = await consul.kv.get({ key: "nodekv/f", raw: true });
    assert.equal(Buffer.from(raw).toString(), "v");
  },

  async kv_recurse_keys() {
    for (const k of ["nodekr/a", "nodekr/b/c", "nodekr/b/d", "nodekr/e"]) await consul.kv.set(k, k);
    const all = await consul.kv.get({ key: "nodekr/", recurse: true });
    assert.deepEqual(all.map((e) => e.Key), ["nodekr/a", "nodekr/b/c", "nodekr/b/d", "nodekr/e"]);
    assert.equal(all[1].Value, "nodekr/b/c");
    assert.deepEqual(await consul.kv.keys("nodekr/"), ["nodekr/a", "nodekr/b/c", "nodekr/b/d", "nodekr/e"]);
    assert.deepEqual(await consul.kv.keys({ key: "nodekr/", separator: "/" }), ["nodekr/a", "nodekr/b/", "nodekr/e"]);
    assert.equal(await consul.kv.del({ key: "nodekr/b/", recurse: true }), true);
    assert.deepEqual(await consul.kv.keys("nodekr/"), ["nodekr/a", "nodekr/e"]);
  },

  async kv_404() {
    assert.equal(await consul.kv.get("nodekv/never"), undefined);
    const [res, data] = await consul.kv.get({ key: "nodekv/never", ctx: withRes() });
    assert.equal(res.statusCode, 404);
    assert.equal(data, undefined);
    assert.ok(BigInt(res.headers["x-consul-index"]) > 0n);
    assert.equal(await consul.kv.get({ key: "nodekv-none/", recurse: true }), undefined);
    assert.equal(await consul.kv.del("nodekv/never"), true);
  },

  async session_lock() {
    const { ID: s1 } = await consul.session.create({ name: "node-lock", lockdelay: "1s", ttl: "30s" });
    const { ID: s2 } = await consul.session.create({ name: "node-other", behavior: "delete", lockdelay: "0s" });
    const info = await consul.session.info(s1);
    assert.equal(info.Name, "node-lock");
    assert.equal(info.LockDelay, 1e9);
    assert.ok((await consul.session.list()).some((s) => s.ID === s2));
    assert.ok((await consul.session.node(nodeName)).some((s) => s.ID === s1));
    const renewed = await consul.session.renew(s1);
    assert.equal(renewed[0].ID, s1);
    assert.equal(await consul.kv.set({ key: "nodelock/leader", value: "one", acquire: s1 }), true);
    assert.equal(await consul.kv.set({ key: "nodelock/leader", value: "two", acquire: s2 }), undefined);
    const e = await consul.kv.get("nodelock/leader");
    assert.equal(e.Session, s1);
    assert.equal(e.LockIndex, 1);
    assert.equal(await consul.kv.set({ key: "nodelock/leader", value: "done", release: s1 }), true);
    assert.equal((await consul.kv.get("nodelock/leader")).Session, undefined);
    assert.equal(await consul.kv.set({ key: "nodelock/leader", value: "two", acquire: s2 }), true);
    await consul.session.destroy(s2);
    assert.equal(await consul.kv.get("nodelock/leader"), undefined);
    await consul.session.destroy(s1);
    assert.equal(await consul.session.info(s1), undefined);
    await assert.rejects(consul.session.renew(s1), (e) => e.response && e.response.statusCode === 404);
  },

  async txn() {
    const b64 = (s) => Buffer.from(s).toString("base64");
    const r = await consul.transaction.create([
      { KV: { Verb: "set", Key: "nodetxn/a", Value: b64("1") } },
      { KV: { Verb: "get", Key: "nodetxn/a" } },
    ]);
    assert.equal(r.Errors, null);
    assert.equal(Buffer.from(r.Results[1].KV.Value, "base64").toString(), "1");
    await assert.rejects(
      consul.transaction.create([{ KV: { Verb: "cas", Key: "nodetxn/a", Value: b64("2"), Index: 1 } }]),
      (e) => e.response && e.response.statusCode === 409);
    assert.equal((await consul.kv.get("nodetxn/a")).Value, "1");
  },

  async blocking_query() {
    await consul.kv.set("nodeblock/k", "before");
    const [res] = await consul.kv.get({ key: "nodeblock/k", ctx: withRes() });
    const idx = res.headers["x-consul-index"];
    const t = setTimeout(() => other.kv.set("nodeblock/k", "after").catch(() => {}), 1000);
    const [res2, e] = await consul.kv.get({ key: "nodeblock/k", index: idx, wait: "60s", timeout: 90000, ctx: withRes() });
    clearTimeout(t);
    assert.equal(e.Value, "after");
    assert.ok(BigInt(res2.headers["x-consul-index"]) > BigInt(idx));
  },

  async watch() {
    await consul.kv.set("nodewatch/k", "v0");
    const watch = consul.watch({ method: consul.kv.get, options: { key: "nodewatch/k", wait: "30s" } });
    const errors = [];
    const values = [];
    watch.on("error", (err) => errors.push(String(err)));
    watch.on("change", (data) => values.push(data && data.Value));
    try {
      await waitFor("the first watch result", async () => values.length > 0 || errors.length > 0, 30000, 50);
      assert.deepEqual(errors, []);
      assert.equal(values[0], "v0");
      await sleep(500); // let the watch park on its index
      await other.kv.set("nodewatch/k", "v1");
      await waitFor("the watch to see v1", async () => values.includes("v1") || errors.length > 0, 30000, 50);
      assert.deepEqual(errors, []);
    } finally {
      watch.end();
    }
  },
};

async function main() {
  const only = process.env.INTEROP_ONLY ? process.env.INTEROP_ONLY.split(",") : Object.keys(cases);
  for (const name of only) {
    let line;
    try {
      await cases[name]();
      line = { name, ok: true };
    } catch (e) {
      line = { name, ok: false, error: (e && e.stack) || String(e) };
    }
    process.stdout.write(JSON.stringify(line) + "\n");
  }
  consul.destroy();
  other.destroy();
}

const guard = setTimeout(() => {
  process.stdout.write(JSON.stringify({ name: "_global_timeout", ok: false, error: "interop.js ran over 240 s" }) + "\n");
  process.exit(2);
}, 240000);
main().then(() => { clearTimeout(guard); }, (e) => {
  process.stdout.write(JSON.stringify({ name: "_main", ok: false, error: String(e && e.stack) }) + "\n");
  process.exit(1);
});
