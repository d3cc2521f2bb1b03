"""``python -m commkernels demo``: decentralized, Byzantine-robust, compressed training with all four families.

The setting. n agents sit on a circulant communication graph (agent i talks to i +- s for the graph's
offsets s; default ``circulant2``: s = 1, 2, so 4 neighbours). f of them are Byzantine, spread evenly
around the circle; the other n - f each hold one shard of scikit-learn's digits (8x8 images, 10 classes;
a stratification-free random 80/20 train/test split, the training part dealt round-robin). Every agent
keeps its own copy of a small mixture-of-experts classifier (``_model``: an input layer, one MoE layer on
``moe.route / plan / permute / combine`` with autograd, a residual connection and a linear head), all
starting from the same parameters theta_0 (one flat vector of d parameters).

A round (every agent at once; ``_protocol.run_config``):

1. Local work: each honest agent takes ``local_steps`` steps of minibatch SGD on its shard.
2. Message: neighbours know agent i through a *public copy* xhat_i of its model (CHOCO-SGD, Koloskova et
   al. 2019). Uncompressed, agent i sends theta_i itself (4d bytes) and xhat_i = theta_i. Compressed, it
   sends ``compress.ef_topk_(theta_i - theta_i_at_last_message, residual_i, k)``: the residual is
   theta - xhat, so the message is the top-k of (theta_i - xhat_i) and what is not sent stays in the residual
   (error feedback); k values + k indices = 8k bytes. Receivers do xhat_i += decompress(message).
   A Byzantine agent sends, in the same format, a message that moves its public copy towards its attack's
   target (uncompressed: the target itself), computed from what it sees, the public copies of its honest
   neighbours H (``attacks.sign_flip``: -mean(H); ``ipm``: -2 mean(H); ``alie``: mean(H) + z std(H);
   ``gaussian``: N(0, 1) noise). Attack "none": those f agents follow the protocol (holding no data).
3. Exchange: for each offset s, every agent's message moves to agent i + s. That is one gossip round over a
   permutation graph: ``graph.mix`` of the (n, L) matrix of all messages in ``--simulate`` mode, and
   ``distributed.gossip`` (batch_isend_irecv to that one neighbour) under torch.distributed. Weight-1 edges
   only, so both copy the messages bit for bit, and both modes compute the same numbers.
4. Aggregation: honest agent i forms Z = [theta_i, xhat_j for its neighbours j] and moves to
   theta_i + gamma (rule(Z) - theta_i). With ``mean`` (``aggregate.mean``) this is plain gossip averaging
   with the graph's Metropolis-Hastings weights (uniform on a regular graph); a robust rule
   (``aggregate.trimmed_mean`` by default) tolerates f_rule = the largest number of Byzantine neighbours
   of any honest agent.
5. Evaluation: the mean test accuracy of the n - f data-holding agents' models.

The run repeats this for a few configurations on the same data and theta_0: mean without attack (the
reference), mean and the robust rule under the attack, each uncompressed and with top-k (``--ratio`` of
the parameters per message), and prints accuracy per round and the bytes sent (message payloads, summed
over all directed edges), with a progress bar on stderr, and plots accuracy against rounds and against
bytes (``--plot``).

Modes: ``--simulate`` runs every agent in this process. Otherwise every agent is a process under
torch.distributed (gloo): under torchrun (RANK / WORLD_SIZE / MASTER_ADDR set: one agent per rank, n =
WORLD_SIZE), or launched here (``--agents`` processes on localhost, a FileStore rendezvous in a temporary
directory). torch runs single-threaded in every agent, and every kernel is deterministic, so the two modes
give bitwise the same models (the tests check the digests). Needs the ``demo`` extra (scikit-learn,
matplotlib).
"""

from __future__ import annotations

from ._cli import add_arguments, main, run

__all__ = ["add_arguments", "main", "run"]
