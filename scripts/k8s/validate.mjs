// Validates the Kubernetes manifests in a folder (default docker/k8s) against the API schemas
// shipped in kubernetes-models (and @kubernetes-models/keda for KEDA's ScaledObject), then checks
// that they fit together and with crunchd; then each overlay in a subfolder (a kustomization
// whose resources include ../), such as jobs-on-redis:
//   node scripts/k8s/validate.mjs [FOLDER]
// Exits 1 with one line per problem.
import fs from "node:fs";
import path from "node:path";
import { parseAllDocuments } from "yaml";

const folder = path.resolve(process.argv[2] ?? new URL("../../docker/k8s", import.meta.url).pathname);
const problems = [];
const objects = [];

// apps/v1 Deployment → Deployment from kubernetes-models/apps/v1; v1 Service → from kubernetes-models/v1.
async function model(apiVersion, kind) {
  try {
    const from = apiVersion.startsWith("keda.sh/") ? "@kubernetes-models/keda" : "kubernetes-models";
    return (await import(`${from}/${apiVersion}`))[kind];
  } catch {
    return undefined;
  }
}

// Validates every manifest of `dir` against its schema; the objects, with the kustomization.
async function load(dir, label) {
  const found = [];
  const kustomizationFile = path.join(dir, "kustomization.yaml");
  const kustomization = fs.existsSync(kustomizationFile)
    ? parseAllDocuments(fs.readFileSync(kustomizationFile, "utf8"))[0].toJS()
    : {};
  const listed = [...(kustomization.resources ?? []), ...(kustomization.patches ?? []).filter((p) => p.path).map((p) => p.path)];
  for (const file of fs.readdirSync(dir).filter((f) => f.endsWith(".yaml") && f !== "kustomization.yaml").sort()) {
    if (!listed.includes(file)) problems.push(`${label}${file}: not listed in kustomization.yaml`);
    const patch = (kustomization.patches ?? []).some((p) => p.path === file);
    for (const doc of parseAllDocuments(fs.readFileSync(path.join(dir, file), "utf8"))) {
      if (doc.errors.length) {
        problems.push(`${label}${file}: ${doc.errors[0].message}`);
        continue;
      }
      const object = doc.toJS();
      if (!object) continue;
      if (patch) {  // a strategic merge patch is not a whole object: it is checked where it applies
        found.push({ file, object, patch });
        continue;
      }
      const Model = await model(object.apiVersion, object.kind);
      if (!Model) {
        problems.push(`${label}${file}: unknown apiVersion/kind ${object.apiVersion} ${object.kind}`);
        continue;
      }
      try {
        new Model(object).validate();
        found.push({ file, object });
        console.log(`ok   ${label}${file}: ${object.apiVersion} ${object.kind} ${object.metadata?.name}`);
      } catch (e) {
        problems.push(`${label}${file}: ${object.kind} ${object.metadata?.name}: ${e.message}`);
      }
    }
  }
  for (const file of listed) {
    if (!file.endsWith("/") && !fs.existsSync(path.join(dir, file))) problems.push(`${label}kustomization.yaml lists ${file}, which does not exist`);
  }
  return { objects: found, kustomization };
}

objects.push(...(await load(folder, "")).objects);

// How the pieces fit together.
const find = (kind) => objects.filter((o) => o.object.kind === kind).map((o) => o.object);
const matches = (selector, labels) => Object.entries(selector ?? {}).every(([k, v]) => labels?.[k] === v);
const seconds = (text) => {
  const m = /^(\d+)(ms|s)$/.exec(text ?? "");
  return m ? Number(m[1]) / (m[2] === "ms" ? 1000 : 1) : undefined;
};
for (const d of find("Deployment")) {
  const pod = d.spec.template;
  if (!matches(d.spec.selector.matchLabels, pod.metadata.labels)) problems.push(`Deployment ${d.metadata.name}: selector does not match its pods`);
  const c = pod.spec.containers.find((x) => x.name === "crunchd");
  if (!c) {
    problems.push(`Deployment ${d.metadata.name}: no container named crunchd`);
    continue;
  }
  if (c.readinessProbe?.httpGet?.path !== "/readyz") problems.push("crunchd: readiness probe must ask /readyz");
  if (c.livenessProbe?.httpGet?.path !== "/healthz") problems.push("crunchd: liveness probe must ask /healthz");
  if (!c.resources?.requests?.cpu || !c.resources?.limits?.cpu) problems.push("crunchd: CPU requests and limits are needed (workers follow the limit, the HPA the request)");
  const drain = seconds(c.env?.find((e) => e.name === "CRUNCH_DRAIN_TIMEOUT")?.value) ?? 10;
  const preStop = c.lifecycle?.preStop?.sleep?.seconds ?? 0;
  const grace = pod.spec.terminationGracePeriodSeconds ?? 30;
  // crunchd gives in-flight answers 1 s after the drain timeout before it stops.
  if (!(grace > preStop + drain + 1)) problems.push(`crunchd: terminationGracePeriodSeconds ${grace} must exceed preStop ${preStop} s + drain ${drain} s + 1 s`);
  for (const s of find("Service")) {
    if (!matches(s.spec.selector, pod.metadata.labels)) problems.push(`Service ${s.metadata.name}: selects no crunch pod`);
  }
  for (const b of find("PodDisruptionBudget")) {
    if (!matches(b.spec.selector.matchLabels, pod.metadata.labels)) problems.push(`PodDisruptionBudget ${b.metadata.name}: selects no crunch pod`);
  }
  for (const n of find("NetworkPolicy")) {
    if (!matches(n.spec.podSelector.matchLabels, pod.metadata.labels)) problems.push(`NetworkPolicy ${n.metadata.name}: selects no crunch pod`);
    if (!(n.spec.policyTypes ?? []).includes("Ingress")) problems.push(`NetworkPolicy ${n.metadata.name}: does not restrict ingress`);
    const ports = (n.spec.ingress ?? []).flatMap((rule) => rule.ports ?? []);
    const served = new Set(c.ports.flatMap((p) => [p.name, p.containerPort]));
    if (ports.length === 0 || !ports.every((p) => served.has(p.port))) problems.push(`NetworkPolicy ${n.metadata.name}: must admit crunchd's port only`);
    if ((n.spec.ingress ?? []).some((rule) => !rule.from || rule.from.length === 0)) problems.push(`NetworkPolicy ${n.metadata.name}: a rule admits every source`);
  }
  for (const h of find("HorizontalPodAutoscaler")) {
    if (h.spec.scaleTargetRef.kind !== "Deployment" || h.spec.scaleTargetRef.name !== d.metadata.name) problems.push(`HorizontalPodAutoscaler ${h.metadata.name}: does not scale ${d.metadata.name}`);
    if (h.spec.minReplicas > h.spec.maxReplicas) problems.push(`HorizontalPodAutoscaler ${h.metadata.name}: minReplicas > maxReplicas`);
  }
}
for (const kind of ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"]) {
  if (find(kind).length === 0) problems.push(`no ${kind}`);
}

// Overlays: a subfolder whose kustomization builds on this one.
let overlays = 0;
for (const sub of fs.readdirSync(folder, { withFileTypes: true }).filter((d) => d.isDirectory() && d.name !== "node_modules")) {
  const dir = path.join(folder, sub.name);
  if (!fs.existsSync(path.join(dir, "kustomization.yaml"))) continue;
  const label = `${sub.name}/`;
  const overlay = await load(dir, label);
  overlays += overlay.objects.filter((o) => !o.patch).length;
  const { kustomization } = overlay;
  if (!(kustomization.resources ?? []).some((r) => r === "../" || r === "..")) problems.push(`${label}kustomization.yaml: does not build on ../`);
  const own = (kind) => overlay.objects.filter((o) => !o.patch && o.object.kind === kind).map((o) => o.object);
  const deployment = find("Deployment")[0];
  const podLabels = deployment?.spec.template.metadata.labels ?? {};
  // Patches apply to the base's Deployment and its crunchd container.
  const env = {};
  for (const { file, object } of overlay.objects.filter((o) => o.patch)) {
    if (object.kind !== "Deployment" || object.metadata?.name !== deployment?.metadata.name) {
      problems.push(`${label}${file}: patches ${object.kind} ${object.metadata?.name}, which the base does not have`);
      continue;
    }
    for (const c of object.spec?.template?.spec?.containers ?? []) {
      if (c.name !== "crunchd") problems.push(`${label}${file}: patches a container named ${c.name}, not crunchd`);
      for (const e of c.env ?? []) env[e.name] = e.value;
    }
  }
  // crunchd's job store names a Service of the overlay, on a port it serves.
  if (env.CRUNCH_JOBS_STORE) {
    const m = /^redis:\/\/([^:/]+)(?::(\d+))?(?:\/\d+)?$/.exec(env.CRUNCH_JOBS_STORE);
    const service = m && own("Service").find((s) => s.metadata.name === m[1]);
    if (!service) {
      problems.push(`${label}: CRUNCH_JOBS_STORE ${env.CRUNCH_JOBS_STORE} names no Service of the overlay`);
    } else {
      const port = Number(m[2] ?? 6379);
      const sp = service.spec.ports.find((p) => p.port === port);
      if (!sp) problems.push(`${label}: Service ${service.metadata.name} has no port ${port}`);
      const backends = [...own("StatefulSet"), ...own("Deployment")].filter((w) => matches(service.spec.selector, w.spec.template.metadata.labels));
      if (backends.length === 0) problems.push(`${label}: Service ${service.metadata.name} selects no workload`);
      for (const w of backends) {
        const served = new Set(w.spec.template.spec.containers.flatMap((c) => (c.ports ?? []).flatMap((p) => [p.name, p.containerPort])));
        if (sp && !served.has(sp.targetPort ?? sp.port)) problems.push(`${label}: ${w.kind} ${w.metadata.name} does not serve the Service's target port`);
        // Only crunchd may reach it.
        const policies = own("NetworkPolicy").filter((n) => matches(n.spec.podSelector.matchLabels, w.spec.template.metadata.labels));
        if (policies.length === 0) problems.push(`${label}: no NetworkPolicy guards ${w.kind} ${w.metadata.name}`);
        for (const n of policies) {
          const froms = (n.spec.ingress ?? []).flatMap((rule) => rule.from ?? [{}]);
          if (froms.length === 0 || !froms.every((f) => f.podSelector && matches(f.podSelector.matchLabels, podLabels) && !f.namespaceSelector)) {
            problems.push(`${label}NetworkPolicy ${n.metadata.name}: must admit crunch's pods alone`);
          }
        }
      }
    }
  }
  // A ScaledObject scales the base's Deployment, and the base's HPA is deleted (KEDA makes its own).
  for (const so of own("ScaledObject")) {
    const target = so.spec.scaleTargetRef;
    if (target.name !== deployment?.metadata.name || (target.kind ?? "Deployment") !== "Deployment") problems.push(`${label}ScaledObject ${so.metadata.name}: does not scale ${deployment?.metadata.name}`);
    if ((so.spec.minReplicaCount ?? 0) > (so.spec.maxReplicaCount ?? 100)) problems.push(`${label}ScaledObject ${so.metadata.name}: minReplicaCount > maxReplicaCount`);
    for (const h of find("HorizontalPodAutoscaler")) {
      const deleted = (kustomization.patches ?? []).some((p) => typeof p.patch === "string" && /\$patch: delete/.test(p.patch) &&
        p.patch.includes("HorizontalPodAutoscaler") && p.patch.includes(`name: ${h.metadata.name}`));
      if (!deleted) problems.push(`${label}: the base's HorizontalPodAutoscaler ${h.metadata.name} is not deleted; it would fight KEDA's`);
    }
    const backlog = so.spec.triggers.filter((t) => t.type === "prometheus");
    if (backlog.length === 0) problems.push(`${label}ScaledObject ${so.metadata.name}: no Prometheus trigger on the backlog`);
    for (const t of backlog) {
      // Every replica reports the whole backlog: a sum would count it once per replica.
      if (!/^max\(crunch_async_backlog_(jobs|seconds|oldest_seconds)\b/.test(t.metadata.query ?? "")) {
        problems.push(`${label}ScaledObject ${so.metadata.name}: the query must be max() of a crunch_async_backlog_* gauge`);
      }
      if (!(Number(t.metadata.threshold) > 0)) problems.push(`${label}ScaledObject ${so.metadata.name}: threshold must be a positive number`);
    }
  }
}

for (const p of problems) console.error(`FAIL ${p}`);
console.log(problems.length ? `${problems.length} problem(s)` : `${objects.length + overlays} manifests valid`);
process.exit(problems.length ? 1 : 0);
