"""Fused training: the folds of a group trained as one model, each member exactly its own fold.

The members' weights are stacked (member k at index k of every tensor) and each training step runs
them all at once through `torch.func.vmap` + `functional_call` over a copy of the model, as HFTA
fuses repeated jobs of one architecture. Nothing couples the members:

- Initialisation: each member's model is built after `seed_everything(its seed)`, as trains/torch.py
  builds a fold's model; its shuffling generator is seeded the same way, so it sees its own batches
  of its own training set in the unfused order (SetBatches.iterate).
- Unequal fold sizes: a step trains the members that still have a batch in this epoch, grouped by
  batch length (the last batches differ); a member without one is masked out of the update, so no
  datapoint is dropped or repeated and BatchNorm never sees padding.
- Dropout: each nn.Dropout becomes MemberDropout, whose rate is a per-member buffer (dropout is a
  fusible value); masks are drawn per member (vmap randomness="different").
- BatchNorm: the running statistics are stacked buffers, updated per member inside vmap.
- Optimiser: StackedOptimizer does torch.optim's Adam / RMSprop / SGD arithmetic elementwise, with
  a per-member learning rate, weight decay and step count; an inactive member's state is untouched.
- Early stopping: one EarlyStopping per member; a stopped member is frozen (trains no more) and is
  predicted, saved and reported at once, by its own nn.Module with its best weights loaded (what
  xvalkit.load_model rebuilds); the group goes on while any member trains.
- A member gone NaN stays NaN alone: the loss is a sum of the members' losses, whose gradient with
  respect to each member's loss is 1 whatever the others hold.
"""

from __future__ import annotations

import copy
from typing import Callable

from . import TrainJob, TrainOutput, inference_batch_size, shuffles
from . import torch as single
from ..determinism import torch_deterministic, torch_seeds
from ..threads import for_torch_model


def _member_dropout():
    import torch
    from torch import nn

    class MemberDropout(nn.Module):
        """nn.Dropout whose rate is a buffer, so that each member of a group keeps its own."""

        def __init__(self):
            super().__init__()
            self.register_buffer("rate", torch.zeros(()))

        def forward(self, x):
            if not self.training:
                return x
            keep = torch.rand_like(x) >= self.rate
            scale = torch.where(self.rate < 1, 1 / (1 - self.rate), torch.zeros_like(self.rate))
            return x * keep * scale

    return MemberDropout


def _member_rnn():
    import torch
    from torch import nn

    class MemberRNN(nn.Module):
        """A one-layer, batch-first nn.GRU / nn.LSTM written as plain tensor operations, step by step,
        with the same parameter names and gate order: cuDNN's and ATen's fused recurrent kernels have
        no vmap rule, these operations do. Used only in the fused copy; each member's own nn.Module
        (what is saved, predicted with and reloaded) keeps the real layer."""

        def __init__(self, rnn):
            super().__init__()
            self.kind = "gru" if isinstance(rnn, nn.GRU) else "lstm"
            self.bidirectional, self.hidden_size = rnn.bidirectional, rnn.hidden_size
            self.directions = ["", "_reverse"] if rnn.bidirectional else [""]
            for name, param in rnn.named_parameters():
                self.register_parameter(name, nn.Parameter(torch.empty_like(param, device="meta")))

        def forward(self, x):
            outputs, last_h, last_c = [], [], []
            for suffix in self.directions:
                w_ih, w_hh = getattr(self, f"weight_ih_l0{suffix}"), getattr(self, f"weight_hh_l0{suffix}")
                b_ih, b_hh = getattr(self, f"bias_ih_l0{suffix}"), getattr(self, f"bias_hh_l0{suffix}")
                inputs = x @ w_ih.T + b_ih  # every time step's input part at once
                h = x.new_zeros(x.shape[0], self.hidden_size)
                c = torch.zeros_like(h)
                steps = range(x.shape[1] - 1, -1, -1) if suffix else range(x.shape[1])
                out = [None] * x.shape[1]
                for t in steps:
                    hidden = h @ w_hh.T + b_hh
                    if self.kind == "gru":  # torch's gate order r, z, n
                        i_r, i_z, i_n = inputs[:, t].chunk(3, dim=-1)
                        h_r, h_z, h_n = hidden.chunk(3, dim=-1)
                        r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
                        h = (1 - z) * torch.tanh(i_n + r * h_n) + z * h
                    else:  # i, f, g, o
                        i, f, g, o = (inputs[:, t] + hidden).chunk(4, dim=-1)
                        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                        h = torch.sigmoid(o) * torch.tanh(c)
                    out[t] = h
                outputs.append(torch.stack(out, dim=1))
                last_h.append(h)
                last_c.append(c)
            output, h_n = torch.cat(outputs, dim=-1), torch.stack(last_h)
            return (output, h_n) if self.kind == "gru" else (output, (h_n, torch.stack(last_c)))

    return MemberRNN


def rnn_paths(model) -> list[str]:
    """The recurrent layers MemberRNN can stand in for: one layer, batch first, with biases."""
    from torch import nn

    return [name for name, m in model.named_modules() if type(m) in (nn.GRU, nn.LSTM) and m.num_layers == 1
            and m.batch_first and m.bias and not m.proj_size]


def dropout_paths(model) -> list[str]:
    from torch import nn

    return [name for name, m in model.named_modules() if isinstance(m, nn.Dropout)]


def fused_copy(model):
    """A copy of `model` on the meta device, each nn.Dropout replaced by MemberDropout and each
    one-layer GRU / LSTM by MemberRNN."""
    base = copy.deepcopy(model).to("meta")
    MemberDropout, MemberRNN = _member_dropout(), _member_rnn()
    for path in dropout_paths(base):
        _replace(base, path, MemberDropout().to("meta"))
    for path in rnn_paths(base):
        _replace(base, path, MemberRNN(base.get_submodule(path)))
    return base


def _replace(model, path: str, module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def structure(model) -> list:
    """What must be equal for models to fuse: module types and tensor shapes (not dropout rates)."""
    return ([(n, type(m).__name__) for n, m in model.named_modules()]
            + [(n, tuple(t.shape), t.dtype) for n, t in model.state_dict().items()])


def settings(model) -> dict:
    """The plain values the model's modules keep besides tensors in their state (nn.Linear's
    in_features, a user's `self.p` read by F.dropout), by dotted name; nn.Dropout's rate is left out:
    MemberDropout takes each member's."""
    from torch import nn

    return {f"{name}.{key}" if name else key: value
            for name, module in model.named_modules() for key, value in vars(module).items()
            if not key.startswith("_") and key != "training" and not (isinstance(module, nn.Dropout) and key == "p")}


def _same(a, b) -> bool:
    import numpy as np
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and a.dtype == b.dtype and torch.equal(a.detach().cpu(), b.detach().cpu()))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    try:
        return bool(a == b)
    except Exception:  # a value whose == does not give one truth value: only itself is the same
        return a is b


def refusal(models: list) -> str | None:
    """Why these models cannot train fused (None: they can): different structures, classes or
    settings. The fused model runs the first member's forward, which reads the first member's
    attributes: members whose attributes differ would silently all train with the first's."""
    first = structure(models[0])
    if any(structure(m) != first for m in models[1:]):
        return "its members' models differ in structure"
    if any(type(m) is not type(models[0]) for m in models[1:]):
        return ("its members' models are instances of different classes (a class defined inside the model "
                "function is a new class at each build; define it at module level to fuse)")
    values = settings(models[0])
    for model in models[1:]:
        other = settings(model)
        for name in sorted(values.keys() | other.keys()):
            if name not in values or name not in other or not _same(values[name], other[name]):
                return (f"its members' models differ in `{name}` ({_short(values.get(name))} and "
                        f"{_short(other.get(name))}), which the fused model would take from the first member "
                        "for all (only nn.Dropout's rate can differ within a group)")
    return None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def functional_refusal(model, input_shape) -> str | None:
    """Try one vmapped training step of two copies on zeros; the error, in one line, if any."""
    import torch
    from torch.func import functional_call, stack_module_state, vmap

    try:
        twins = [copy.deepcopy(model).cpu() for _ in range(2)]
        params, buffers = stack_module_state(twins)
        params = {n: p.detach().requires_grad_() for n, p in params.items()}
        buffers.update(_rates(twins, dropout_paths(model)))
        base = fused_copy(twins[0]).train()
        x = torch.zeros((2, 2) + tuple(input_shape))
        out = vmap(lambda p, b, x: functional_call(base, (p, b), (x,)), randomness="different")(params, buffers, x)
        out.float().sum().backward()
    except torch.cuda.OutOfMemoryError:  # the group is too big, not the model unfit
        raise
    except Exception as exc:  # the reason it trains unfused, said in one line
        text = str(exc).strip().splitlines()
        return f"torch.func cannot run it ({type(exc).__name__}: {text[0] if text else ''})"
    return None


def members_that_fit(model, job: TrainJob, wanted: int) -> int:
    """How many of `wanted` members fit in 80 % of the GPU's free memory: one member's need is
    measured as one training step of a copy of its model on a zero batch (activations and
    gradients), plus its weights four times over (stacked copy, gradient, two Adam moments).
    On the CPU: all of them."""
    import torch

    device = next(model.parameters()).device
    if device.type != "cuda":
        return wanted
    free, _ = torch.cuda.mem_get_info(device)
    probe = copy.deepcopy(model).train()
    x = torch.zeros((int(job.params["batch_size"]),) + tuple(job.data.input_shape), device=device)
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    probe(x).float().sum().backward()
    step = torch.cuda.max_memory_allocated(device) - before
    del probe, x
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return fitting(free, step + 4 * weights, wanted)


def fitting(free_bytes: int, member_bytes: int, wanted: int) -> int:
    """Members of `member_bytes` each that fit in 80 % of `free_bytes`, from 1 to `wanted`."""
    return max(1, min(wanted, int(0.8 * free_bytes) // max(1, member_bytes)))


def _rates(models: list, paths: list[str]) -> dict:
    import torch

    return {f"{path}.rate": torch.tensor([float(m.get_submodule(path).p) for m in models]) for path in paths}


class StackedOptimizer:
    """torch.optim's Adam / RMSprop / SGD (as trainers/torch.make_optimizer configures them),
    elementwise over stacked members: per-member learning rate, weight decay and step count."""

    def __init__(self, name: str, params: dict, decayed: set[str], lrs, l2s):
        import torch

        if name not in ("adam", "rmsprop", "sgd"):
            raise ValueError(f"optimizer={name!r} is not one of 'adam', 'sgd', 'rmsprop'")
        self.name, self.params, self.decayed = name, params, decayed
        self.lr, self.wd = lrs.double(), (2.0 * l2s).float()
        self.steps = torch.zeros_like(self.lr)
        self.state = {n: [torch.zeros_like(p) for _ in range(2 if name == "adam" else 1)] for n, p in params.items()}

    def step(self, grads: dict, active) -> None:
        """Update the members where `active` (a bool per member) holds; the others stay as they were."""
        import torch

        self.steps = self.steps + active.to(self.steps.dtype)
        # torch.optim computes the bias corrections in Python floats (float64): so here, else
        # 1 - 0.999 ** t alone is 1e-4 off in float32 at the first steps
        correction1 = (self.lr / (1 - 0.9 ** self.steps)).float()
        correction2 = (1 - 0.999 ** self.steps).sqrt().float()
        lr32 = self.lr.float()
        for n, p in self.params.items():
            shape = (-1,) + (1,) * (p.dim() - 1)
            mask, lr = active.view(shape), lr32.view(shape)
            g = grads[n]
            if n in self.decayed:
                g = g + self.wd.view(shape) * p
            if self.name == "adam":
                m, v = self.state[n]
                new_m = torch.lerp(m, g, 0.1)
                new_v = v * 0.999 + (1 - 0.999) * g * g
                denom = new_v.sqrt() / correction2.view(shape) + 1e-7
                new_p = p - correction1.view(shape) * new_m / denom
                m.copy_(torch.where(mask, new_m, m))
                v.copy_(torch.where(mask, new_v, v))
            elif self.name == "rmsprop":
                (v,) = self.state[n]
                new_v = v * 0.9 + (1 - 0.9) * g * g
                new_p = p - lr * g / (new_v.sqrt() + 1e-7)
                v.copy_(torch.where(mask, new_v, v))
            else:
                new_p = p - lr * g
            p.copy_(torch.where(mask, new_p, p))


class Member:
    """One fold of the group: its job, its own nn.Module, sets, shuffling, stopper and logs."""

    def __init__(self, index: int, job: TrainJob, model, device: str):
        import torch

        p = job.params
        self.index, self.job, self.model = index, job, model
        self.sets = {name: single.SetBatches(s, streaming=single.streams(job, s, device), device=device)
                     for name, s in job.data.sets().items()}
        self.shuffling = torch.Generator().manual_seed(job.seed) if shuffles(p) else None
        self.epochs = single.Epochs(job)
        self.l2 = single.l2_factor(job.model_fn, p)
        self.batches = None  # this epoch's training batches (an iterator), or None once exhausted


class Sums:
    """Per-member sample-weighted sums of the loss and the metric over one pass, kept on the device
    as one tensor each (a member's value is read once, at the end of the pass)."""

    def __init__(self, members: int, device: str):
        import torch

        self.loss = torch.zeros(members, dtype=torch.float64, device=device)
        self.metric = torch.zeros(members, dtype=torch.float64, device=device)
        self.count = [0] * members

    def add(self, ks: list[int], idx, losses, metrics, n: int) -> None:
        self.loss[idx] += losses.detach().double() * n
        self.metric[idx] += metrics.double()
        for k in ks:
            self.count[k] += n

    def means(self) -> dict[int, tuple[float, float]]:
        loss, metric = self.loss.tolist(), self.metric.tolist()
        return {k: (loss[k] / n, metric[k] / n) for k, n in enumerate(self.count) if n}


class FusedGroup:
    """The stacked state of a group's members and one fused training step over any subset of them."""

    def __init__(self, members: list[Member], device: str):
        import torch
        from torch.func import stack_module_state

        models = [m.model for m in members]
        self.device, self.members = device, members
        params, buffers = stack_module_state(models)
        self.params = {n: p.detach().clone() for n, p in params.items()}
        self.buffers = {n: b.detach().clone() for n, b in buffers.items()}
        self.rates = {n: r.to(device) for n, r in _rates(models, dropout_paths(models[0])).items()}
        self.base = fused_copy(models[0])
        names = {id(p): n for n, p in models[0].named_parameters()}
        # a list in the unfused fold's order, not a set: the penalty's sum follows it (string hashes
        # change with PYTHONHASHSEED, and `xval reproduce` compares histories bit for bit)
        self.decayed = [names[id(w)] for w in single.regularized_parameters(models[0])]
        job = members[0].job
        lrs = torch.tensor([float(m.job.params["learning_rate"]) for m in members], dtype=torch.float64, device=device)
        l2s = torch.tensor([m.l2 for m in members], dtype=torch.float64, device=device)
        self.optimizer = StackedOptimizer(job.params["optimizer"], self.params, set(self.decayed), lrs, l2s)
        self.task_type = job.task_type

    def _forward(self, params: dict, buffers: dict, x):
        from torch.func import functional_call, vmap

        return vmap(lambda p, b, x: functional_call(self.base, (p, b), (x,)), randomness="different")(params, buffers, x)

    def _subsets(self, batches: dict[int, tuple]):
        """(member indices, their batches' x, y) per batch length: members with batches of one
        length run together (the last batches of unequal sets differ; nothing is padded)."""
        import torch

        by_length: dict[int, list[int]] = {}
        for k, (_, y) in batches.items():
            by_length.setdefault(len(y), []).append(k)
        for ks in by_length.values():
            x = torch.stack([batches[k][0] for k in ks]).to(self.device, non_blocking=True)
            y = torch.stack([batches[k][1] for k in ks]).to(self.device, non_blocking=True)
            yield ks, torch.tensor(ks, device=self.device), x, y

    def _members_buffers(self, idx) -> dict:
        buffers = {n: b[idx] for n, b in self.buffers.items()}
        buffers.update({n: r[idx] for n, r in self.rates.items()})
        return buffers

    def train_step(self, batches: dict[int, tuple], sums: Sums) -> None:
        """One optimiser step of the members in `batches` ({index: (x, y)}); their losses and metrics
        added to `sums`."""
        import torch

        grads = {n: torch.zeros_like(p) for n, p in self.params.items()}
        active = torch.zeros(len(self.members), dtype=torch.bool, device=self.device)
        self.base.train()
        for ks, idx, x, y in self._subsets(batches):
            leaves = {n: p[idx].requires_grad_() for n, p in self.params.items()}
            buffers = self._members_buffers(idx)
            out = self._forward(leaves, buffers, x).float()
            losses = self._losses(out, y)
            losses.sum().backward()
            for n, leaf in leaves.items():
                grads[n][idx] = leaf.grad
            for n in self.buffers:  # the running statistics the forward pass updated
                self.buffers[n][idx] = buffers[n]
            active[idx] = True
            with torch.no_grad():
                sums.add(ks, idx, losses, self._metric_sums(out, y), y.shape[1])
        with torch.no_grad():
            self.optimizer.step(grads, active)

    def evaluate(self, ks: list[int], set_name: str, batch_size: int) -> dict[int, tuple[float, float]]:
        """(mean loss, mean metric) of members `ks` on their `set_name` sets, fused, in eval mode
        (BatchNorm's running statistics, no dropout): each datapoint alone, as trainers/torch.py's pass."""
        import torch

        passes = {k: self.members[k].sets[set_name].iterate(batch_size) for k in ks}
        sums = Sums(len(self.members), self.device)
        self.base.eval()
        with torch.no_grad():
            while passes:
                batches = {}
                for k in list(passes):
                    batch = next(passes[k], None)
                    if batch is None:
                        del passes[k]
                    else:
                        batches[k] = batch
                for subset, idx, x, y in self._subsets(batches):
                    params = {n: p[idx] for n, p in self.params.items()}
                    out = self._forward(params, self._members_buffers(idx), x).float()
                    sums.add(subset, idx, self._losses(out, y), self._metric_sums(out, y), y.shape[1])
        return sums.means()

    def _losses(self, out, y):
        """Each member's batch loss: CrossEntropyLoss or MSELoss, mean over its batch."""
        from torch.nn import functional as F

        if self.task_type == "classification":
            k, b = y.shape
            return F.cross_entropy(out.reshape(k * b, -1), y.reshape(-1), reduction="none").view(k, b).mean(1)
        return (out - y).square().flatten(1).mean(1)

    def _metric_sums(self, out, y):
        if self.task_type == "classification":
            return (out.argmax(dim=2) == y).sum(1)
        return (out - y).abs().mean(dim=2).sum(1)

    def state(self, k: int) -> dict:
        """Member k's state_dict (its own keys), detached copies."""
        state = {n: p[k].clone() for n, p in self.params.items()}
        state.update({n: b[k].clone() for n, b in self.buffers.items()})
        return state

    def load_into(self, k: int, state: dict | None = None) -> None:
        """Member k's nn.Module gets its weights now (or `state`)."""
        self.members[k].model.load_state_dict(state if state is not None else self.state(k))

    def penalty(self, k: int, l2: float) -> float:
        return single.l2_penalty([self.params[n][k] for n in self.decayed], l2)


def build_members(jobs: list[TrainJob], device: str) -> list:
    """Each member's nn.Module, built as trainers/torch.fit_predict builds a fold's: after seeding
    with its own seed."""
    models = []
    for job in jobs:
        single.seed_everything(job.seed)
        models.append(single.build(job, device)[0])
    return models


def fit_predict_group(jobs: list[TrainJob], on_done: Callable[[int, TrainOutput], None],
                      models: list | None = None) -> None:
    """Train `jobs` fused; `on_done(i, output)` as soon as member i is finished and saved (its
    TrainOutput is that of trainers/torch.fit_predict for the same job)."""
    import torch

    device, description = single.torch_device()
    if any(j.params.get("mixed_precision") for j in jobs) and device.startswith("cuda"):
        raise ValueError("mixed_precision members are not fused (one loss scale each is not implemented)")
    determinism = torch_deterministic(device)
    models = models if models is not None else build_members(jobs, device)
    # a fused fold equals its unfused self to rounding, not bit for bit: `xval reproduce` names this
    determinism.update(torch_threads=for_torch_model(models[0], jobs[0].params.get("threads", 0)),
                       fused_group_size=len(jobs))
    members = [Member(i, job, model, device) for i, (job, model) in enumerate(zip(jobs, models))]
    group = FusedGroup(members, device)
    single.seed_everything(jobs[0].seed)  # dropout masks: drawn per member from this stream
    first = jobs[0]
    batch_size = first.params["batch_size"]
    eval_batch = inference_batch_size(batch_size, first.data.input_shape)
    training = list(range(len(members)))
    try:
        for epoch in range(1, max(j.params["num_epochs"] for j in jobs) + 1):
            if not training:
                break
            sums = Sums(len(members), device)
            for k in training:
                members[k].batches = members[k].sets["train"].iterate(batch_size, members[k].shuffling)
            pending = set(training)
            while pending:
                batches = {}
                for k in sorted(pending):
                    batch = next(members[k].batches, None)
                    if batch is None:
                        pending.discard(k)
                    else:
                        batches[k] = batch
                if not batches:
                    break
                group.train_step(batches, sums)
            finished = []
            validation = group.evaluate(training, "val", eval_batch)
            train = sums.means()
            for k in training:
                member = members[k]
                stop = member.epochs.record(epoch, train[k], validation[k], group.penalty(k, member.l2),
                                            lambda k=k: group.state(k))
                if stop or epoch >= member.job.params["num_epochs"]:
                    finished.append(k)
            for k in finished:
                training.remove(k)
                on_done(k, _finish(members[k], group, eval_batch, device, description, determinism))
    finally:
        for member in members:
            member.epochs.close()


def _finish(member: Member, group: FusedGroup, eval_batch: int, device: str, description: str,
            determinism: dict) -> TrainOutput:
    """Restore the member's best epoch into its own module, predict, save: as an unfused fold ends."""
    member.epochs.close()
    group.load_into(member.index, member.epochs.stopper.best_state)
    job = member.job
    predictions = {name: single.predict(member.model, batches.iterate(eval_batch), job.task_type, device)
                   for name, batches in member.sets.items()}
    single.save(job, member.model)
    return member.epochs.output(predictions, description, {"determinism": dict(determinism),
                                                           "seeds": torch_seeds(job.seed, shuffles(job.params))})
