"""The one block-by-block calibration engine every data-aware technique shares.

    capture the inputs of block 0 for every calibration window (the model stops there);
    for each block, in order:
        move the block to the device; hook its target Linears; run every window through it
        (the hooks fold each input into running statistics, never storing activations;
        Linears that read the same tensor, like q/k/v, share one statistics object);
        remove the hooks; let the technique compress the block using those statistics;
        run the windows through the compressed block to get the next block's inputs.

Peak memory is one block plus one set of hidden states, not the whole model on the device, and
every later block sees the outputs of the already-compressed blocks before it, so it can make
up for their error.  Blocks are found by shape (the longest ModuleList of identical modules),
never by architecture-specific classes.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from core.engine.distributed import all_reduce_stats, shard, world_size
from core.engine.targets import select_linears
from core.errors import StudioError
from core.events import ProgressMeter
from core.models.memory import release_free_memory
from core.models.streaming import block_stream


class _StopForward(Exception):
    """Raised by the capture hook once block 0's inputs are stored."""


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's repeated blocks (decoder or encoder layers): the largest ModuleList of one module type."""
    best: tuple[str, nn.ModuleList] | None = None
    best_params = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0 and len({type(m) for m in module}) == 1:
            params = sum(p.numel() for p in module.parameters())
            if params > best_params:
                best, best_params = (name, module), params
    if best is None:
        raise StudioError(f"{type(model).__name__} has no repeated blocks (layers) this engine can calibrate")
    return best


def _first_tensor(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple | list) else output


def _to(value: Any, device: torch.device | str) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(_to(v, device) for v in value)
    return value


def capture_block_inputs(model: nn.Module, blocks: nn.ModuleList, windows: torch.Tensor,
                         device: torch.device | str) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """Hidden states and keyword arguments that reach block 0, one entry per window (batch of 1)."""
    inputs: list[torch.Tensor] = []
    kwargs_list: list[dict[str, Any]] = []

    def grab(_module, args, kwargs):
        hidden = args[0] if args else kwargs.pop("hidden_states")
        inputs.append(hidden.detach())
        kwargs_list.append({k: v for k, v in kwargs.items() if k not in ("past_key_values", "use_cache")})
        raise _StopForward

    handle = blocks[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        for row in windows:
            try:
                model(row.unsqueeze(0).to(device), use_cache=False)
            except _StopForward:
                pass
    finally:
        handle.remove()
    return inputs, kwargs_list


@contextmanager
def input_hooks(modules: dict[str, nn.Module], observe: Callable[[str, torch.Tensor], None]) -> Iterator[None]:
    """Call ``observe(name, input)`` with every input each module sees; hooks are removed on exit."""
    handles = [module.register_forward_pre_hook(lambda _m, args, name=name: observe(name, args[0].detach()))
               for name, module in modules.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class Block:
    """What a technique gets for each block: its index, name, target Linears and their statistics."""

    index: int
    name: str
    module: nn.Module
    linears: dict[str, nn.Linear]  # full module name -> Linear inside this block
    stats: dict[str, Any]  # full module name -> the technique's statistics object


CompressBlock = Callable[[Block], Generator[Any, None, None]]


ObserveBlock = Callable[[Block, list[torch.Tensor], list[torch.Tensor]], Generator[Any, None, None]]


def run_blockwise(model: nn.Module, windows: torch.Tensor, *, make_stats: Callable[[nn.Linear], Any] | None = None,
                  compress_block: CompressBlock | None = None, targets: list[str] | None = None,
                  ignore: list[str] | None = None, device: str | torch.device | None = None,
                  stage: str = "Calibrating", step_index: int | None = None, sequential: bool = False,
                  observe_block: ObserveBlock | None = None) -> Generator[Any, None, None]:
    """Run the block-by-block loop described in the module docstring; yields the technique's events.

    ``make_stats(linear)`` returns an object with ``add(x)`` taking a batch of inputs [..., in_features].
    ``compress_block(block)`` is a generator that changes the block's Linears in place.
    ``sequential`` ("true sequential" in GPTQ's reference): inside each block, the Linears are
    compressed in stages of those that read the same input (e.g. q/k/v, then o_proj, then
    gate/up, then down), re-running the block before each stage so a stage's statistics come
    from the outputs of the stages already compressed.  One more pass through the block per stage.
    ``observe_block(block, inputs, outputs)`` (a generator) sees every window's hidden states entering
    and leaving each block, after it is compressed; without ``compress_block`` the loop only observes
    (e.g. measuring how much each block changes the hidden state).

    On several processes (:mod:`core.engine.distributed`), each runs its share of the windows and the
    statistics are all-reduced before each block is compressed, so every process compresses alike.  A loop
    with ``observe_block`` runs every window on every process instead (what it observes is not combined).

    A streamed model (:mod:`core.models.streaming`) has its blocks on the meta device: each is read from the
    weight files when its turn comes and handed back (to be written) and dropped once it is done.
    """
    blocks_name, blocks = find_blocks(model)
    chosen = dict(select_linears(model, targets, ignore)) if compress_block is not None else {}
    stream = block_stream(model)
    home = next(model.parameters()).device
    device = torch.device(device) if device is not None else home
    use_cache = getattr(getattr(model, "config", None), "use_cache", None)
    if use_cache is not None:
        model.config.use_cache = False
    meter = ProgressMeter(stage, len(blocks), step_index)
    if observe_block is None and world_size() > 1:
        windows = shard(windows)
    try:
        inputs, kwargs_list = _capture_on(model, blocks, windows, device, home)
        for index, block in enumerate(blocks):
            block_name = f"{blocks_name}.{index}"
            if stream is not None:
                stream.onload(block_name, block, device)
            else:
                block.to(device)
            linears = {name: module for name, module in chosen.items() if name.startswith(block_name + ".")}
            groups, called_once = _stages(block, linears, inputs[0], kwargs_list[0], device) if linears \
                else ([], False)
            stats = _shared_stats(groups, linears, make_stats)
            stages = groups if sequential else [list(linears)]
            for names in stages if linears else []:
                part = {name: linears[name] for name in names}
                part_stats = {name: stats[name] for name in names}
                observers = {id(part_stats[name]): name for name in reversed(names)}  # one Linear per input
                watched = {name: part[name] for name in observers.values()}
                # The windows' outputs are not needed here, so each forward stops once the last watched
                # Linear to run has seen its input (the MLP's down_proj, or the stage's own layers).
                last = [name for group in groups for name in group if name in watched][-1] if called_once else None
                _accumulate(block, inputs, kwargs_list, device, watched, part_stats, last)
                all_reduce_stats(part_stats)  # several processes: every window's statistics, on each of them
                yield from compress_block(Block(index, block_name, block, part, part_stats))
            stats.clear()  # statistics can be large (a Hessian per Linear); free them before moving on
            outputs = _run_block(block, inputs, kwargs_list, device)
            if observe_block is not None:
                yield from observe_block(Block(index, block_name, block, linears, {}), inputs, outputs)
            inputs = outputs
            if stream is not None:
                stream.offload(block_name, block)
            elif device != home:
                block.to(home)
            release_free_memory()
            event = meter.update(index + 1)
            if event:
                yield event
    finally:
        if use_cache is not None:
            model.config.use_cache = use_cache


def _stages(block: nn.Module, linears: dict[str, nn.Module], first_input: torch.Tensor,
            first_kwargs: dict[str, Any], device) -> tuple[list[list[str]], bool]:
    """The block's Linears in the order they run, grouped by the input tensor they share.

    Also says whether every one of them ran exactly once (so a forward may stop after the last).
    """
    calls: list[tuple[str, torch.Tensor]] = []
    with input_hooks(linears, lambda name, x: calls.append((name, x))):
        _run_block(block, [first_input], [first_kwargs], device)
    stages: list[list[str]] = []
    seen: set[str] = set()
    previous = None
    for name, x in calls:
        if name in seen:
            continue
        seen.add(name)
        # the hooks see detached views: the same input shares storage and shape (kept alive in ``calls``)
        if previous is not None and x.data_ptr() == previous.data_ptr() and x.shape == previous.shape:
            stages[-1].append(name)
        else:
            stages.append([name])
        previous = x
    called_once = len(calls) == len(linears) == len(seen)
    return stages + [[name] for name in linears if name not in seen], called_once  # never called: own stage


def _accumulate(block: nn.Module, inputs: list[torch.Tensor], kwargs_list: list[dict[str, Any]], device,
                watched: dict[str, nn.Module], stats: dict[str, Any], stop_after: str | None) -> None:
    """Fold every watched Linear's input, for every window, into its statistics.

    With ``stop_after`` (the last of them to run), each window's forward ends right after that
    Linear has seen its input: what would follow only makes the block's output, unused here.
    """
    def observe(name: str, x: torch.Tensor) -> None:
        stats[name].add(x)
        if name == stop_after:
            raise _StopForward

    with input_hooks(watched, observe), torch.no_grad():
        for x, kw in zip(inputs, kwargs_list, strict=True):
            try:
                block(x.to(device), **{k: _to(v, device) for k, v in kw.items()})
            except _StopForward:
                pass


def _shared_stats(groups: list[list[str]], linears: dict[str, nn.Module],
                  make_stats: Callable[[nn.Linear], Any]) -> dict[str, Any]:
    """One statistics object per distinct input: Linears that read the same tensor (q/k/v, gate/up) share it.

    Their statistics would be identical, and accumulating a Hessian is a large share of a
    calibration pass (576² per token for each of q, k and v alone).  Techniques only read them.
    """
    stats: dict[str, Any] = {}
    for names in groups:
        shared = make_stats(linears[names[0]])
        for name in names:
            stats[name] = shared
    return stats


def _capture_on(model, blocks, windows, device, home):
    """Capture block-0 inputs with only the modules before block 0 on the device."""
    if device == home:
        with torch.no_grad():
            return capture_block_inputs(model, blocks, windows, device)
    others = [m for m in model.children() if m is not blocks]
    model.to(device)  # small models: simplest correct choice; the blocks go back below
    for block in blocks:
        block.to(home)
    try:
        with torch.no_grad():
            return capture_block_inputs(model, blocks, windows, device)
    finally:
        for module in others:
            module.to(home)


def _run_block(block: nn.Module, inputs: list[torch.Tensor], kwargs_list: list[dict[str, Any]],
               device) -> list[torch.Tensor]:
    with torch.no_grad():
        return [_first_tensor(block(x.to(device), **{k: _to(v, device) for k, v in kw.items()}))
                for x, kw in zip(inputs, kwargs_list, strict=True)]


class InputNormStats:
    """Running sum of squared inputs per input feature: ‖X_j‖² over all tokens (Wanda's statistic)."""

    def __init__(self, linear: nn.Linear):
        self.sum_squares = torch.zeros(linear.in_features, dtype=torch.float64, device=linear.weight.device)
        self.tokens = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).to(torch.float64)
        self.sum_squares += (x * x).sum(dim=0)
        self.tokens += x.shape[0]

    def norms(self) -> torch.Tensor:
        return self.sum_squares.sqrt()

    def all_reduce(self, reduce) -> None:
        """Add up the sums and token counts of every process (see core.engine.distributed)."""
        reduce(self.sum_squares)
        self.tokens = _reduced_count(reduce, self.tokens, self.sum_squares.device)


class HessianStats:
    """H = (2/n) Σ x xᵀ over all n input tokens (the layer-wise Hessian of GPTQ and SparseGPT).

    Each window's x xᵀ is computed in float32 and added to a float64 sum, and H is read as float32.
    The float64 sum of a handful of float32 products is exact or nearly so, hence independent of the
    order of the windows: two processes each summing half the windows, then adding their sums
    (:mod:`core.engine.distributed`), give one process's H to the last bit, and so GPTQ's rounding
    decisions, which flip on a one-bit difference in H, are the same.  (A float32 running mean
    differed in the last bits and moved 45% of the bundled model's GPTQ weights by a grid step.)

    H is symmetric, so each window adds only the panels on and above the diagonal (about 5/8 of
    the products of a full xᵀx); ``hessian`` mirrors the upper triangle when it is read.
    """

    PANELS = 4  # measured here: 1536 columns, 512 tokens: 7.5 ms per batch vs 11.6 ms for a full xᵀx

    def __init__(self, linear: nn.Linear):
        columns = linear.in_features
        device = linear.weight.device
        self._sum = torch.zeros(columns, columns, dtype=torch.float64, device=device)  # upper triangle used
        self._full: torch.Tensor | None = None
        self.tokens = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).to(torch.float32)
        columns = x.shape[1]
        panel = -(-columns // self.PANELS)
        # float32 scratch for this window only, so a block's Hessians hold 8 bytes per entry between windows
        product = torch.empty(panel, columns, dtype=torch.float32, device=self._sum.device)
        for start in range(0, columns, panel):  # x xᵀ's upper panels; what lies below them is never read
            rows = min(panel, columns - start)
            part = product[:rows, : columns - start]
            torch.mm(x[:, start:start + rows].T, x[:, start:], out=part)
            self._sum[start:start + rows, start:] += part
        self.tokens += x.shape[0]
        self._full = None

    def all_reduce(self, reduce) -> None:
        """Add up every process's sums and token counts."""
        reduce(self._sum)
        self.tokens = _reduced_count(reduce, self.tokens, self._sum.device)
        self._full = None

    @property
    def hessian(self) -> torch.Tensor:
        """The full symmetric H [in, in] (float32); callers must not change it in place."""
        if self._full is None:
            upper = torch.triu(self._sum) * (2.0 / max(self.tokens, 1))  # a Linear no window reached stays zero
            self._full = (upper + torch.triu(upper, diagonal=1).T).to(torch.float32)
        return self._full


def _reduced_count(reduce, count: int, device) -> int:
    total = torch.tensor([count], dtype=torch.float64, device=device)
    reduce(total)
    return int(total.item())


def inverse_hessian_cholesky(hessian: torch.Tensor, percdamp: float, method: str) -> torch.Tensor:
    """Upper Cholesky factor U of (H + λI)⁻¹ with λ = percdamp · mean(diag H), so H⁻¹ = UᵀU.

    The second-order methods (GPTQ, SparseGPT) read their column updates from U.  If H is not
    positive definite at the asked dampening, λ is raised tenfold, up to three times.
    """
    damp = percdamp * torch.mean(torch.diag(hessian))
    eye = torch.eye(hessian.shape[0], dtype=hessian.dtype, device=hessian.device)
    for _ in range(4):
        lower, info = torch.linalg.cholesky_ex(hessian + damp * eye)
        if int(info) == 0:
            upper, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(lower), upper=True)
            if int(info) == 0:
                return upper
        damp = damp * 10
    raise StudioError(f"{method} could not factorise a layer's Hessian even with 1000× the dampening; "
                      "raise 'dampening' or use more calibration windows")
