// A small client of the odeserve API, typed from openapi/openapi.json by openapi-typescript
// (schema.d.ts is generated next to it, not committed) and openapi-fetch. `tsc --noEmit` checks
// that every operation, its representations and its errors type as the server sends them.
import createClient from "openapi-fetch";
import type { components, paths } from "./schema";

type Job = components["schemas"]["Job"];
type Problem = components["schemas"]["Problem"];
type Status = "queued" | "running" | "succeeded" | "failed" | "canceled";
type Outcome = "converged" | "stalled" | "budget_reached" | "time_limit" | "diverged" | "canceled";
type ErrorType = "worker_died" | "timeout" | "memory_limit" | "refused" | "diverged" | "error";

function fail(problem: Problem): never {
  throw new Error(`${problem.status} ${problem.title}: ${problem.detail} (${problem.field ?? "-"})`);
}

export async function solveSeed(baseUrl: string, token?: string): Promise<Job> {
  const client = createClient<paths>({ baseUrl, headers: token ? { Authorization: `Bearer ${token}` } : {} });
  const submitted = await client.POST("/solve", {
    body: {
      equations: ["y' = -2*x*y"],
      domain: [-2, 2],
      conditions: ["y(0) = 1"],
      exact: { y: "exp(-x^2)" },
      output: { points: 101, derivatives: 1 },
    },
  });
  if (submitted.error) fail(submitted.error);
  let job: Job = submitted.data;
  const location: string | null = submitted.response.headers.get("Location");
  const path = { params: { path: { job_id: job.id } } };
  while (job.status === "queued" || job.status === "running") {
    await new Promise((resolve) => setTimeout(resolve, 500));
    const polled = await client.GET("/jobs/{job_id}", path);
    if (polled.error) fail(polled.error);
    job = polled.data;
  }
  const status: Status = job.status;
  const outcome: Outcome | null | undefined = job.outcome;
  const errorType: ErrorType | undefined = job.error?.type;
  console.log(location, status, outcome, errorType, job.progress.iteration, job.metrics?.non_finite?.length);

  const events = await client.GET("/jobs/{job_id}/events", { ...path, parseAs: "text" });
  const stream: string | undefined = events.data;
  const history = await client.GET("/jobs/{job_id}/history", path);
  if (history.error) fail(history.error);
  const lastLoss: number | null | undefined = history.data.at(-1)?.loss;

  const solution = await client.GET("/jobs/{job_id}/solution", path);
  if (solution.error) fail(solution.error);
  const y: (number | null)[] = solution.data.values["y"];
  const csv = await client.GET("/jobs/{job_id}/solution.csv", { ...path, parseAs: "text" });
  if (csv.error) fail(csv.error);
  const table: string = csv.data;

  const torchscript = await client.GET("/jobs/{job_id}/model.pt", { ...path, parseAs: "arrayBuffer" });
  if (torchscript.error) fail(torchscript.error);
  const exported = await client.GET("/jobs/{job_id}/model.pt2", { ...path, parseAs: "blob" });
  if (exported.error) fail(exported.error);
  const png = await client.GET("/jobs/{job_id}/plot.png", { ...path, parseAs: "blob" });
  const svg = await client.GET("/jobs/{job_id}/plot.svg", { ...path, parseAs: "text" });
  const bytes: ArrayBuffer = torchscript.data;
  const program: Blob = exported.data;
  console.log(stream?.length, lastLoss, y.length, table.length, bytes.byteLength, program.size, png.data?.size, svg.data?.length);

  const canceled = await client.DELETE("/jobs/{job_id}", path);
  if (canceled.error) {
    const conflict: Problem = canceled.error; // 409: the job has finished
    console.log(conflict.status, conflict.detail);
  }
  const metrics = await client.GET("/metrics", { parseAs: "text" });
  const health = await client.GET("/healthz");
  const ready = await client.GET("/readyz");
  if (ready.error) fail(ready.error);
  console.log(metrics.data?.length, health.data?.status, ready.data.workers);
  return job;
}
