"""CommFormer-style learned communication graph: agents learn whom to listen to.

After Hu et al., "Learning Multi-Agent Communication from Graph Modeling Perspective" (CommFormer, ICLR
2024): the communication graph among N agents is a learnable N x N matrix of edge logits, relaxed to a
discrete graph so that each agent receives from a few others, and messages are aggregated by attention
over that graph. Here:

- Graph relaxation: for every receiver i, its k senders are the k largest logits of row i (self excluded);
  the hard 0/1 choice is made differentiable with a straight-through estimator, m = hard + soft -
  soft.detach(), soft = softmax of row i. The chosen edges form a commkernels Graph (rebuilt each step);
  m on those edges enters the attention as edge_bias, so its forward value is a constant shift (it leaves
  the softmax unchanged) while the loss's sensitivity to each edge's bias flows back to the logits. During
  training the top-k is drawn with Gumbel noise (CommFormer samples its graph too), so that edges outside
  the current choice get tried; evaluation takes the plain top-k.
- Message passing: commkernels.graph.graph_attention (fused SDDMM -> edge softmax -> SpMM with a
  deterministic backward), over a batch of B episodes as one block-diagonal graph of B * N nodes.
- Toy cooperative task ("relay"): agent i sees a private vector o_i and must output o_partner(i), the
  observation of a fixed, unknown partner (a random permutation). Nobody can solve it alone; the team
  succeeds when every agent's graph includes its partner and its attention reads it.

Run: python examples/commformer.py [--agents 8 --k 2 --steps 300]
"""

from __future__ import annotations

import argparse

import torch

from commkernels import graph


class CommFormer(torch.nn.Module):
    def __init__(self, agents: int, obs_dim: int, hidden: int = 32, heads: int = 2, k: int = 2):
        super().__init__()
        self.agents, self.heads, self.k = agents, heads, k
        self.edge_logits = torch.nn.Parameter(torch.zeros(agents, agents))
        self.agent_embedding = torch.nn.Parameter(torch.randn(agents, hidden) * 0.1)
        self.encode = torch.nn.Linear(obs_dim, hidden)
        self.q = torch.nn.Linear(hidden, hidden)
        self.kv = torch.nn.Linear(hidden, 2 * hidden)
        self.decode = torch.nn.Sequential(torch.nn.Linear(2 * hidden, hidden), torch.nn.ReLU(),
                                          torch.nn.Linear(hidden, obs_dim))

    def relaxed_graph(self, generator=None):
        """The top-k senders of each receiver, and the straight-through weight of each chosen edge. With a
        generator (training), the top-k is taken of logits + Gumbel noise (a sample without replacement
        from softmax(logits)), so edges outside the current top-k are tried and can earn gradient."""
        n, k = self.agents, self.k
        eye = torch.eye(n, dtype=torch.bool)
        logits = self.edge_logits.masked_fill(eye, float("-inf"))
        soft = torch.softmax(logits, dim=1)
        scores = logits.detach() + torch.arange(n, 0, -1) * 1e-6  # ties go to the lower index
        if generator is not None:
            uniform = torch.rand(n, n, generator=generator).clamp_(1e-12, 1 - 1e-12)
            scores = scores - torch.log(-torch.log(uniform))
        chosen = torch.topk(scores, k, dim=1).indices  # (n, k) senders
        dst = torch.arange(n).repeat_interleave(k)
        src = chosen.reshape(-1)
        straight_through = 1.0 + soft[dst, src] - soft[dst, src].detach()  # forward 1, gradient of soft
        return src, dst, straight_through

    def forward(self, obs, generator=None):
        """obs (B, N, obs_dim) -> predictions (B, N, obs_dim)."""
        b, n, _ = obs.shape
        src, dst, weight = self.relaxed_graph(generator)
        offsets = (torch.arange(b) * n).repeat_interleave(src.numel())
        g = graph.Graph(torch.stack([src.repeat(b) + offsets, dst.repeat(b) + offsets]), b * n)
        h = torch.relu(self.encode(obs) + self.agent_embedding).reshape(b * n, -1)
        hd = h.shape[1] // self.heads
        q = self.q(h).reshape(b * n, self.heads, hd)
        key, value = self.kv(h).reshape(b * n, 2, self.heads, hd).unbind(1)
        bias = weight.repeat(b)  # (E,): the same graph in every episode, shared by the heads
        msg = graph.graph_attention(g, q.contiguous(), key.contiguous(), value.contiguous(), bias)
        return self.decode(torch.cat([h, msg.reshape(b * n, -1)], dim=1)).reshape(b, n, -1)


def make_task(agents: int, obs_dim: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    partner = torch.randperm(agents, generator=g)
    partner = torch.where(partner == torch.arange(agents), (partner + 1) % agents, partner)

    def sample(batch: int):
        obs = torch.randn(batch, agents, obs_dim, generator=g)
        return obs, obs[:, partner]

    return partner, sample


def train(agents: int = 8, obs_dim: int = 4, k: int = 2, steps: int = 200, batch: int = 64, lr: float = 0.02,
          seed: int = 0, log=None):
    """Trains the model; returns (model, partner, losses, logit_grad_norms)."""
    torch.manual_seed(seed)
    partner, sample = make_task(agents, obs_dim, seed)
    model = CommFormer(agents, obs_dim, k=k)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses, grad_norms = [], []
    noise = torch.Generator().manual_seed(seed + 1)
    for step in range(steps):
        obs, target = sample(batch)
        loss = torch.nn.functional.mse_loss(model(obs, noise), target)
        opt.zero_grad()
        loss.backward()
        grad_norms.append(float(model.edge_logits.grad.norm()))
        opt.step()
        losses.append(float(loss.detach()))
        if log is not None and step % 50 == 0:
            found = float((model.relaxed_graph()[0].reshape(agents, k) == partner[:, None]).any(1).float().mean())
            log(f"step {step:4d}  loss {loss.item():.4f}  partners in graph {found:.0%}")
    return model, partner, losses, grad_norms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    model, partner, losses, _ = train(args.agents, k=args.k, steps=args.steps, log=print)
    chosen = model.relaxed_graph()[0].reshape(args.agents, args.k)
    found = (chosen == partner[:, None]).any(1)
    print(f"final loss {losses[-1]:.4f} (first {losses[0]:.4f}); partners found by {int(found.sum())}/{args.agents} agents")


if __name__ == "__main__":
    main()
