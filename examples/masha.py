"""MASHA on a distributed bilinear saddle-point problem: compressed communication against extragradient.

After Beznosikov, Richtarik, Diskin, Ryabinin, Gasnikov, "Distributed Methods with Compressed
Communication for Solving Variational Inequalities, with Theoretical Guarantees" (arXiv 2110.03313,
NeurIPS 2022), whose abstract names "a standard bilinear min-max problem" as its first experimental
setup. Here (the form, its regularisation and the instance are this example's, not checked against the
paper's) M workers hold

    f_m(x, y) = x^T A_m y + b_m^T x + c_m^T y + (lam/2) ||x||^2 - (lam/2) ||y||^2,

and together solve min_x max_y (1/M) sum_m f_m(x, y), a strongly monotone variational inequality with
operator F(z) = (1/M) sum_m F_m(z), F_m(x, y) = (A_m y + b_m + lam x, -A_m^T x - c_m + lam y). Its solution
solves the linear system F(z*) = 0 (numpy.linalg.solve). The instance (make_problem: M = 10, d = 200,
||A|| = 50 lam so L/mu ~ 50, data similarity 0.1, k = 20 = d/10) is this example's own, not the paper's.

What was and was not checked against the paper. On 2026-11-27 the stored copies reachable from here
(corpora "pages", "docs", "code", "issues"; copies at huggingface.datasetlab.ai/papers/2110.03313.md,
huggingface.co/papers/2110.03313, papers.neurips.cc (abstract page), fdocuments.in (arXiv v1),
liner.com (a third-party summary)) gave the title page and abstract only: every query aimed at the
algorithm boxes, the theorems or the experiment section (about 20 of them) returned the same opening
excerpt. So Algorithms 1 and 2 below are written from the structure that the abstract and the summary
state (MASHA1: unbiased compressors such as Rand-k, extragradient with variance reduction; MASHA2:
contractive compressors such as Top-k with error feedback, for Z = R^d and h = 0; both bidirectional) and
from recall; their printed line numbers, the theorems' step sizes and the experiment's parameters (M, d,
lam, k, how the paper's x-axis counts bits) are NOT verified. The steps are listed by role, not by line.

Methods (all simulated in one process, float64):
- extragradient (Korpelevich), uncompressed: every worker sends F_m(z^k) and F_m(z^{k+1/2}) in full;
- MASHA1: unbiased Rand-k on the workers (commkernels.compress.randk, scaled by d/k), optionally
  Rand-server_k on the server;
- MASHA2: Top-k with error feedback on the workers (commkernels.compress.ef_topk_), optionally
  Top-server_k with error feedback on the server (commkernels.compress.ServerCompressor).
One iteration of either MASHA (loopless variance-reduced extragradient with a reference point w^k):
  (a) zbar^k = tau z^k + (1 - tau) w^k;  z^{k+1/2} = zbar^k - gamma F(w^k)   (h = 0: no prox);
  (b) uplink, worker m: MASHA1 sends Q_m(F_m(z^{k+1/2}) - F_m(w^k)); MASHA2 sends
      C_m(e_m^k + gamma (F_m(z^{k+1/2}) - F_m(w^k))) and keeps e_m^{k+1} = e_m^k + gamma (...) - C_m(...);
      only these differences, which shrink as the method converges, are compressed;
  (c) downlink, server: the average of the workers' messages, recompressed when server_k is given
      (MASHA2: C(e^k + average), e^{k+1} = e^k + average - C(...)), and one bit b_k ~ Bernoulli(1 - tau);
  (d) MASHA1: z^{k+1} = zbar^k - gamma (F(w^k) + downlink); MASHA2: z^{k+1} = z^{k+1/2} - downlink;
  (e) if b_k = 1: w^{k+1} = z^{k+1}, every worker sends F_m(w^{k+1}) uncompressed and gets F(w^{k+1});
      else w^{k+1} = w^k. (Initially z^0 = w^0 and F_m(w^0) is sent uncompressed.)

Bits: per worker, uplink only (the server's downlink is not counted), 64 bits per value (the simulation's
float64). Rand-k indices cost nothing: the receiver regenerates them from the shared (seed, step). Top-k
messages cost their payload as commkernels.compress.pack encodes it: the values and the indices in the
"auto" codec (delta varints here: 8 bits per index). compress.pack also frames every message with a
40-byte header; by default no message is charged for framing (frame_bits=0) - the uncompressed vectors
of extragradient and of the reference-point exchanges, and the Rand-k messages, carry none either, so
charging it to the Top-k messages alone (as this example did before) favoured the other methods.
frame_bits=320 charges pack's header on every message of every method (then a Top-k message costs
exactly 8 * msg.nbytes).

Parameters. 1 - tau = 1/q = k/d (q = d/k: E||Q(x)||^2 <= q ||x||^2 for the scaled Rand-k), so the
expected full exchanges cost as much as the compressed messages. The step is the variance-reduced
extragradient bound gamma = sqrt(1 - tau) / (2 C L~) with L~^2 = mean_m L_m^2 and C^2 the second-moment
factor of the estimator 1/M sum_m Q_m(.), recompressed by the server when server_k is given:
C^2 = q_serv (1 + (q_dev - 1)/M), q_serv = d/server_k or 1. MASHA2 takes the same step (Top-k contracts
by 1 - k/d); not a bound proved for it. Extragradient takes 0.5/L.

What it shows (uplink bits to reach the accuracy, relative to extragradient; seeds 0 / 1):
    instance                              frame_bits   MASHA1         MASHA2
    default (M 10, d 200, k 20, 1e-3)     0            0.83 / 0.84    0.88 / 0.89
                                          320          0.92 / 0.93    0.97 / 0.98
    test    (M 10, d 100, k 10, 1e-2)     0            0.84 / 0.85    0.89 / 0.90
                                          320          1.01 / 1.03    1.06 / 1.08
MASHA2 needs as many iterations as MASHA1 here (same step; the step, not the compression error, limits
the rate on this dense random instance), so it pays the Top-k indices on top. Why the saving is modest:
MASHA sends about 2k values per iteration against extragradient's 2d, but takes about C sqrt(q) times
more iterations (its step is sqrt(1/q)/C of extragradient's, up to constants), so the ratio scales as
C / sqrt(q) = sqrt((1 + (q - 1)/M) / q): sqrt(1.9/10) ~ 0.44 here (times the constants of the two step
rules: ~1.9 measured). It falls only if both q and M grow (it tends to sqrt(1/M) for large q), and a
fixed per-message cost (frame_bits) eats it on small messages. Doubling every method's step halves every
method's bits (and 4x diverges for all three), so the ratios do not hinge on the steps. Server
compression (server_k = k) multiplies q_serv into C^2 and costs MASHA1 about 3x more bits than
extragradient here: bidirectional compression pays only when the downlink is what is scarce.

Run: python examples/masha.py [--frame-bits 320] [--plot masha.png]
"""

from __future__ import annotations

import argparse
import dataclasses
import struct

import numpy as np

from commkernels import compress

VALUE_BITS = 64
# commkernels.compress.pack's frame: a 40-byte header (layout in commkernels/compress/_wire.py) whose bytes 24..39
# hold the lengths of the two payload sections (values, encoded indices) as little-endian uint64.
WIRE_HEADER_BYTES = 40
WIRE_HEADER_BITS = 8 * WIRE_HEADER_BYTES


def payload_bits(msg) -> int:
    """Bits of a SparseMsg's payload as compress.pack encodes it (index codec "auto"): its values (64 bits
    each here) and its encoded indices, without pack's 40-byte header (a framing cost that every message,
    compressed or not, would pay on this wire; see frame_bits)."""
    buf = np.asarray(compress.pack(msg))
    values_bytes, index_bytes = struct.unpack_from("<QQ", buf[:WIRE_HEADER_BYTES].tobytes(), 24)
    assert WIRE_HEADER_BYTES + values_bytes + index_bytes == buf.size
    return 8 * (values_bytes + index_bytes)


@dataclasses.dataclass
class Problem:
    A: np.ndarray  # (M, dx, dy)
    b: np.ndarray  # (M, dx)
    c: np.ndarray  # (M, dy)
    lam: float

    @property
    def workers(self) -> int:
        return self.A.shape[0]

    @property
    def dim(self) -> int:
        return self.A.shape[1] + self.A.shape[2]

    def operator(self, m: int, z: np.ndarray) -> np.ndarray:
        """F_m(z) for worker m."""
        dx = self.A.shape[1]
        x, y = z[:dx], z[dx:]
        return np.concatenate([self.A[m] @ y + self.b[m] + self.lam * x,
                               -self.A[m].T @ x - self.c[m] + self.lam * y])

    def full_operator(self, z: np.ndarray) -> np.ndarray:
        return np.mean([self.operator(m, z) for m in range(self.workers)], axis=0)

    def solution(self) -> np.ndarray:
        """z* with F(z*) = 0: [[lam I, A], [-A^T, lam I]] z = (-b, c) for the averaged A, b, c."""
        A, b, c = self.A.mean(0), self.b.mean(0), self.c.mean(0)
        dx, dy = A.shape
        K = np.block([[self.lam * np.eye(dx), A], [-A.T, self.lam * np.eye(dy)]])
        return np.linalg.solve(K, np.concatenate([-b, c]))

    def lipschitz(self) -> float:
        """L of F: the largest singular value of its (constant) Jacobian."""
        A = self.A.mean(0)
        dx, dy = A.shape
        J = np.block([[self.lam * np.eye(dx), A], [-A.T, self.lam * np.eye(dy)]])
        return float(np.linalg.norm(J, 2))

    def worker_lipschitz(self) -> float:
        """L~ = sqrt(mean_m L_m^2), L_m the largest singular value of worker m's Jacobian."""
        dx, dy = self.A.shape[1:]
        eye = self.lam * np.eye(dx + dy)
        return float(np.sqrt(np.mean([np.linalg.norm(eye + np.block([[np.zeros((dx, dx)), Am],
                                                                     [-Am.T, np.zeros((dy, dy))]]), 2) ** 2
                                      for Am in self.A])))


def make_problem(workers: int = 10, dx: int = 100, dy: int = 100, lam: float = 1.0, similarity: float = 0.1,
                 conditioning: float = 50.0, seed: int = 0) -> Problem:
    """Workers' matrices A_m = A + similarity * B_m (data similarity); A scaled to spectral norm
    conditioning * lam, so L/mu of F is about `conditioning`."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((dx, dy))
    A *= conditioning * lam / np.linalg.norm(A, 2)
    B = rng.standard_normal((workers, dx, dy)) / np.sqrt(max(dx, dy))
    b, c = rng.standard_normal((workers, dx)), rng.standard_normal((workers, dy))
    return Problem(A + similarity * lam * B, b, c, lam)


@dataclasses.dataclass
class Trace:
    name: str
    bits: list  # cumulative uplink bits per worker after each iteration
    distance: list  # ||z - z*|| / ||z0 - z*|| after each iteration

    def bits_to_reach(self, accuracy: float) -> float:
        for b, d in zip(self.bits, self.distance):
            if d <= accuracy:
                return b
        return float("inf")


def _trace(name, problem, z0):
    z_star = problem.solution()
    scale = np.linalg.norm(z0 - z_star)
    trace = Trace(name, [], [])

    def record(bits, z):
        trace.bits.append(bits)
        trace.distance.append(float(np.linalg.norm(z - z_star) / scale))
        return trace.distance[-1]

    return trace, record


def extragradient(problem: Problem, iterations: int, gamma: float | None = None, accuracy: float = 0.0,
                  frame_bits: int = 0) -> Trace:
    """Uncompressed extragradient: z^{k+1/2} = z^k - gamma F(z^k), z^{k+1} = z^k - gamma F(z^{k+1/2});
    every worker sends F_m(z^k) and F_m(z^{k+1/2}) in full (two messages of d values, frame_bits each on top)."""
    d = problem.dim
    gamma = gamma or 0.5 / problem.lipschitz()
    z = np.zeros(d)
    trace, record = _trace("extragradient", problem, z)
    bits = 0
    for _ in range(iterations):
        half = z - gamma * problem.full_operator(z)
        z = z - gamma * problem.full_operator(half)
        bits += 2 * (d * VALUE_BITS + frame_bits)
        if record(bits, z) <= accuracy:
            break
    return trace


def _parameters(problem: Problem, k: int, server_k: int | None, gamma: float | None,
                tau: float | None) -> tuple[float, float]:
    """tau and gamma (module docstring): 1 - tau = k/d; gamma = sqrt(1 - tau) / (2 C L~),
    C^2 = q_serv (1 + (q_dev - 1)/M) with q_dev = d/k and q_serv = d/server_k (1 without server
    compression)."""
    M, d = problem.workers, problem.dim
    tau = 1.0 - k / d if tau is None else tau
    q_dev = d / k
    q_serv = 1.0 if server_k is None else d / server_k
    if gamma is None:
        C = np.sqrt(q_serv * (1.0 + (q_dev - 1.0) / M))
        gamma = np.sqrt(1.0 - tau) / (2.0 * C * problem.worker_lipschitz())
    return tau, gamma


def masha1(problem: Problem, k: int, iterations: int, server_k: int | None = None, gamma: float | None = None,
           tau: float | None = None, seed: int = 0, accuracy: float = 0.0, frame_bits: int = 0) -> Trace:
    """MASHA1 (Algorithm 1) with unbiased Rand-k on the workers (Q_m^dev) and, when server_k is given,
    Rand-server_k on the server (Q^serv); otherwise the server sends the average uncompressed."""
    rng = np.random.default_rng(seed)
    M, d = problem.workers, problem.dim
    tau, gamma = _parameters(problem, k, server_k, gamma, tau)
    # Initialisation: z^0 = w^0; every worker sends F_m(w^0) uncompressed, all get F(w^0).
    z = np.zeros(d)
    w = z.copy()
    F_w_m = [problem.operator(m, w) for m in range(M)]
    F_w = np.mean(F_w_m, axis=0)
    trace, record = _trace("MASHA1 (Rand-k)", problem, z)
    bits = d * VALUE_BITS + frame_bits
    for step in range(iterations):
        zbar = tau * z + (1.0 - tau) * w  # zbar^k = tau z^k + (1 - tau) w^k
        z_half = zbar - gamma * F_w  # z^{k+1/2} = zbar^k - gamma F(w^k)  (h = 0: no prox)
        uplink = np.zeros(d)  # worker m sends Q_m^dev(F_m(z^{k+1/2}) - F_m(w^k)), its own Rand-k draw
        for m in range(M):
            msg = compress.randk(problem.operator(m, z_half) - F_w_m[m], k, seed=seed * (M + 1) + m + 1, step=step)
            uplink += compress.decompress(msg)
        # the server sends Q^serv(1/M sum_m Q_m^dev(...)) and the bit b_k ~ Bernoulli(1 - tau)
        down = uplink / M
        if server_k is not None:
            down = compress.decompress(compress.randk(down, server_k, seed=seed * (M + 1), step=step))
        z = z_half - gamma * down  # z^{k+1} = zbar^k - gamma (F(w^k) + Q^serv(...))
        bits += k * VALUE_BITS + frame_bits  # indices regenerated from (seed, step): not sent
        if rng.random() < 1.0 - tau:  # b_k = 1: w^{k+1} = z^{k+1}, F_m(w^{k+1}) sent uncompressed
            w = z.copy()
            F_w_m = [problem.operator(m, w) for m in range(M)]
            F_w = np.mean(F_w_m, axis=0)
            bits += d * VALUE_BITS + frame_bits
        if record(bits, z) <= accuracy:
            break
    return trace


def masha2(problem: Problem, k: int, iterations: int, server_k: int | None = None, gamma: float | None = None,
           tau: float | None = None, seed: int = 0, accuracy: float = 0.0, frame_bits: int = 0) -> Trace:
    """MASHA2 (Algorithm 2) with Top-k and error feedback on the workers (C_m^dev, e_m) and, when
    server_k is given, Top-server_k with error feedback on the server (C^serv, e); otherwise the server
    sends the average of the workers' messages uncompressed. The compressor is biased, so gamma moves
    inside the compression. gamma: as MASHA1's with q = d/k (Top-k's contraction is 1 - k/d); not a
    bound proved for MASHA2."""
    rng = np.random.default_rng(seed)
    M, d = problem.workers, problem.dim
    tau, gamma = _parameters(problem, k, server_k, gamma, tau)
    # Initialisation: z^0 = w^0, e_m^0 = 0, e^0 = 0; F_m(w^0) sent uncompressed.
    z = np.zeros(d)
    w = z.copy()
    F_w_m = [problem.operator(m, w) for m in range(M)]
    F_w = np.mean(F_w_m, axis=0)
    errors = [np.zeros(d) for _ in range(M)]
    if server_k is not None:  # float64 wire: no downlink rounding
        server = compress.ServerCompressor(d, server_k, dtype="float64")
    trace, record = _trace("MASHA2 (Top-k + EF)", problem, z)
    bits = d * VALUE_BITS + frame_bits
    for _ in range(iterations):
        zbar = tau * z + (1.0 - tau) * w  # zbar^k = tau z^k + (1 - tau) w^k
        z_half = zbar - gamma * F_w  # z^{k+1/2} = zbar^k - gamma F(w^k)
        # worker m sends C_m^dev(e_m^k + gamma (F_m(z^{k+1/2}) - F_m(w^k))) and keeps
        # e_m^{k+1} = e_m^k + gamma (F_m(z^{k+1/2}) - F_m(w^k)) - C_m^dev(...)  (compress.ef_topk_)
        msgs = [compress.ef_topk_(gamma * (problem.operator(m, z_half) - F_w_m[m]), errors[m], k)
                for m in range(M)]
        # the server sends C^serv(e^k + 1/M sum_m C_m^dev(...)), keeps e^{k+1} = e^k + mean - C^serv(...)
        if server_k is None:
            down = compress.sparse_aggregate(msgs, d, average=True)
        else:
            down = compress.decompress(server.step(msgs, average=True))
        z = z_half - down  # z^{k+1} = z^{k+1/2} - C^serv(...)
        # what compress.pack sends (values + "auto"-coded indices), its header counted as frame_bits like
        # every other message's
        bits += sum(payload_bits(msg) for msg in msgs) / M + frame_bits
        if rng.random() < 1.0 - tau:  # b_k = 1: w^{k+1} = z^{k+1}, F_m(w^{k+1}) sent uncompressed
            w = z.copy()
            F_w_m = [problem.operator(m, w) for m in range(M)]
            F_w = np.mean(F_w_m, axis=0)
            bits += d * VALUE_BITS + frame_bits
        if record(bits, z) <= accuracy:
            break
    return trace


def run(workers=10, dim=200, k=20, accuracy=1e-3, iterations=20000, seed=0, similarity=0.1, conditioning=50.0,
        frame_bits=0):
    problem = make_problem(workers, dim // 2, dim - dim // 2, similarity=similarity, conditioning=conditioning,
                           seed=seed)
    return [extragradient(problem, iterations, accuracy=accuracy, frame_bits=frame_bits),
            masha1(problem, k, iterations, seed=seed, accuracy=accuracy, frame_bits=frame_bits),
            masha2(problem, k, iterations, seed=seed, accuracy=accuracy, frame_bits=frame_bits)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--dim", type=int, default=200)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--accuracy", type=float, default=1e-3)
    parser.add_argument("--iterations", type=int, default=50000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frame-bits", type=int, default=0,
                        help="bits charged on every message on top of its payload (320: compress.pack's header)")
    parser.add_argument("--plot", help="save a plot of distance against bits here (needs matplotlib)")
    args = parser.parse_args()
    traces = run(args.workers, args.dim, args.k, args.accuracy, args.iterations, args.seed,
                 frame_bits=args.frame_bits)
    target = f"bits/worker to {args.accuracy:g}"
    print(f"{'method':<22} {'iterations':>10} {target:>24} {'final distance':>15}")
    for t in traces:
        print(f"{t.name:<22} {len(t.bits):>10} {t.bits_to_reach(args.accuracy):>24.4g} {t.distance[-1]:>15.3g}")
    if args.plot:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("matplotlib is not installed: no plot")
            return
        fig, ax = plt.subplots(figsize=(6, 4))
        for t in traces:
            ax.semilogy(np.asarray(t.bits) / 8e3, t.distance, label=t.name)
        ax.set_xlabel("kB sent per worker (uplink)")
        ax.set_ylabel("||z - z*|| / ||z0 - z*||")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot)
        print(f"plot saved to {args.plot}")


if __name__ == "__main__":
    main()
