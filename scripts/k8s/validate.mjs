// Validates the Kubernetes manifests in a folder (default docker/k8s) against the API schemas
// shipped in kubernetes-models, then checks that they fit together and with crunchd:
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
    return (await import(`kubernetes-models/${apiVersion}`))[kind];
  } catch {
    return undefined;
  }
}

const kustomization = path.join(folder, "kustomization.yaml");
const listed = fs.existsSync(kustomization)
  ? (parseAllDocuments(fs.readFileSync(kustomization, "utf8"))[0].toJS().resources ?? [])
  : [];
for (const file of fs.readdirSync(folder).filter((f) => f.endsWith(".yaml") && f !== "kustomization.yaml").sort()) {
  if (!listed.includes(file)) problems.push(`${file}: not listed in kustomization.yaml`);
  for (const doc of parseAllDocuments(fs.readFileSync(path.join(folder, file), "utf8"))) {
    if (doc.errors.length) {
      problems.push(`${file}: ${doc.errors[0].message}`);
      continue;
    }
    const object = doc.toJS();
    if (!object) continue;
    const Model = await model(object.apiVersion, object.kind);
    if (!Model) {
      problems.push(`${file}: unknown apiVersion/kind ${object.apiVersion} ${object.kind}`);
      continue;
    }
    try {
      new Model(object).validate();
      objects.push({ file, object });
      console.log(`ok   ${file}: ${object.apiVersion} ${object.kind} ${object.metadata?.name}`);
    } catch (e) {
      problems.push(`${file}: ${object.kind} ${object.metadata?.name}: ${e.message}`);
    }
  }
}
for (const file of listed) {
  if (!fs.existsSync(path.join(folder, file))) problems.push(`kustomization.yaml lists ${file}, which does not exist`);
}

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

for (const p of problems) console.error(`FAIL ${p}`);
console.log(problems.length ? `${problems.length} problem(s)` : `${objects.length} manifests valid`);
process.exit(problems.length ? 1 : 0);
