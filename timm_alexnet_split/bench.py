"""``timm-alexnet-split bench``: what LRN costs, as ratios against baselines timed in the same run.

Variants of alexnet_split_2 (same weights): ours (tower-local LRN: the Triton kernels on a GPU, fused by
inductor on a CPU), LRN replaced by identity (the ceiling), PyTorch's nn.LocalResponseNorm per tower (the
naive way). On a GPU also torchvision's alexnet (same FLOPs, no LRN, no towers) and the naive split-2 of
ANCHORS.md (grouped convs, nn.LocalResponseNorm per group), each eager and under torch.compile, in bf16 +
channels_last and in fp32; alexnet_split_3 and 4 towers against split-2; the towers placed with
--model-parallel; ``--profile PATH`` writes the top kernels of one training step. onnxruntime against
PyTorch eager on the CPU. Variants are timed in interleaved rounds (median), so drift on a shared machine
hits them alike. Absolute numbers move from run to run; the ratios are the result.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from .atomic import write_text
from .bench_nets import GPU_KINDS, TOWER_KINDS, GroupLRN, naive_split  # noqa: F401  (bench's public names)
from .bench_nets import stepper as _stepper
from .bench_nets import variant as _variant
from .errors import CommandParser
from .timing import sync as _sync
from .timing import time_variants

PROG = 'timm-alexnet-split bench'


# the goals, as ratios measured in the same run (docs/benchmarks.md)
LRN_GOAL = {'cpu': 0.90, 'cuda': 0.95}  # ours / LRN removed, training
TV_GOAL = 0.70  # alexnet_split_2 / torchvision's alexnet, training, bf16 + channels_last
TOWERS_GOAL = 0.90  # alexnet_split_3 and 4 towers / alexnet_split_2


def _inputs(device: torch.device, batch: int, img_size: int, channels_last: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(batch, 3, img_size, img_size, device=device) * 60
    y = torch.randint(0, 1000, (batch,), device=device)
    return (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y


def _models(kinds: List[str], device: torch.device, channels_last: bool) -> Dict[str, nn.Module]:
    """Each kind on the device (alexnet_split_2's variants with the same weights), channels_last if asked."""
    torch.manual_seed(0)
    ref = _variant('ours', 1000).state_dict()
    fmt = torch.channels_last if channels_last else torch.preserve_format
    return {k: _variant(k, 1000, ref if k in ('ours', 'no_lrn', 'nn_lrn') else None).to(device, memory_format=fmt)
            for k in kinds}


def _ratio_rows(ips: Dict[Tuple[str, bool], float], warm: Dict[Tuple[str, bool], float], base: dict) -> List[dict]:
    """One row per (kind, compiled): images/s, the ratios to LRN removed and to torchvision's alexnet in the same mode
    (eager to eager, compiled to compiled) where those were timed, compiled / eager, and a compiled one's warm-up."""
    rows = []
    for (k, comp), v in ips.items():
        r = dict(base, variant=k, compiled=comp, img_s=round(v, 1))
        for other, key in (('no_lrn', 'ratio_to_no_lrn'), ('tv_alexnet', 'ratio_to_tv_alexnet')):
            if (other, comp) in ips:
                r[key] = round(v / ips[(other, comp)], 3)
        if comp and (k, False) in ips:
            r.update(ratio_to_eager=round(v / ips[(k, False)], 3), compile_s=round(warm[(k, comp)], 1))
        rows.append(r)
    return rows


def bench_variants(device: torch.device, batch: int, amp: bool, channels_last: bool, train: bool, kinds: List[str],
                   rounds: int, warmup: int, img_size: int = 224, compiled: Optional[List[str]] = None) -> List[dict]:
    """Images/s of each kind in one set of interleaved rounds; the kinds in ``compiled`` also under torch.compile
    (the same weights, timed in the same rounds)."""
    x, y = _inputs(device, batch, img_size, channels_last)
    models = _models(kinds, device, channels_last)
    steps = {(k, False): _stepper(m, x, y, train, amp) for k, m in models.items()}
    for k in compiled or []:
        steps[(k, True)] = _stepper(torch.compile(models[k]), x, y, train, amp)
    warm: Dict[Tuple[str, bool], float] = {}
    ips = time_variants(steps, device, rounds, max(warmup, 1 if compiled else 0), batch, warm)
    base = dict(mode='train' if train else 'infer', batch=batch, amp_bf16=amp, channels_last=channels_last)
    return _ratio_rows(ips, warm, base)


def bench_lrn(device: torch.device, batch: int, amp: bool, channels_last: bool, rounds: int, warmup: int,
              with_tv: bool, img_size: int = 224) -> List[dict]:
    """Ours, LRN removed and nn.LocalResponseNorm (and torchvision's alexnet), eager, training then inference."""
    kinds = ['ours', 'no_lrn', 'nn_lrn'] + (['tv_alexnet'] if with_tv else [])
    return [r for train in (True, False)
            for r in bench_variants(device, batch, amp, channels_last, train, kinds, rounds, warmup, img_size)]


def bench_placement(device: torch.device, batch: int, amp: bool, rounds: int, warmup: int,
                    placements: List[List[str]], img_size: int = 224) -> List[dict]:
    """Training throughput of alexnet_split_2 with its towers placed (parallel.place_towers) against the unplaced
    model, same weights, same run: what ``--model-parallel`` costs or gains. On one GPU, ['cuda:0', 'cuda:0']
    measures the placement's own overhead; with two, ['cuda:0', 'cuda:1'] whether the towers overlap."""
    from .parallel import place_towers
    torch.manual_seed(0)
    ref = _variant('ours', 1000)
    x = torch.randn(batch, 3, img_size, img_size, device=device) * 60
    y = torch.randint(0, 1000, (batch,), device=device)
    steps = {'unplaced': _stepper(ref.to(device), x, y, True, amp)}
    for devs in placements:
        placed = place_towers(_variant('ours', 1000, ref.state_dict()), devs)
        steps[' '.join(devs)] = _stepper(placed, x, y, True, amp)
    ips = time_variants(steps, device, rounds, warmup, batch)
    return [dict(mode='train', variant='placed' if k != 'unplaced' else 'unplaced', towers_on=k, batch=batch,
                 amp_bf16=amp, img_s=round(v, 1), ratio_to_unplaced=round(v / ips['unplaced'], 3))
            for k, v in ips.items()]


def _machine() -> str:
    import os
    cpu = platform.processor() or platform.machine()
    s = f'{os.cpu_count()} CPU cores ({cpu}), torch {torch.__version__}, {torch.get_num_threads()} threads'
    if torch.cuda.is_available():
        s += f', GPU {torch.cuda.get_device_name(0)}'
    return s


def _data_main(args: argparse.Namespace, device: torch.device, out: Path) -> int:
    from .databench import cores_available, run
    from .errors import UserError
    if args.data_images < 10:
        raise UserError('--data-images must be at least 10')
    if args.data_dir and not Path(args.data_dir).is_dir():
        raise UserError(f'--data-dir {args.data_dir} is not a folder')
    print(f'machine: {_machine()}; results go to {out}')
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = _machine()  # before the per-core timing sets one thread
    result = run(args.data_images, args.rounds, cores_available(), device, args.data_dir, print_fn=print)
    result.update(machine=machine, date=datetime.now(timezone.utc).isoformat(timespec='seconds'))
    write_text(out, json.dumps(result, indent=2), 'the benchmark')  # silently: the ratio stays the last line
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=PROG,
        description='Measure, in one run, the training and inference throughput of alexnet_split_2 with our '
                    'tower-local LRN against the same network with LRN removed (the goal: >= 0.90 on a CPU, fp32, '
                    'batch 32; >= 0.95 on a GPU, bf16 + channels_last, batch 256) and with PyTorch\'s '
                    'nn.LocalResponseNorm; on a GPU also torchvision\'s alexnet (goal: split-2 >= 0.70x) and a naive '
                    'grouped split-2, each eager and under torch.compile (goal: never slower), in bf16 + channels_last '
                    'and fp32, alexnet_split_3 and 4 towers (goal: within 10%% of split-2) and the towers placed '
                    'with --model-parallel against the unplaced model; and onnxruntime '
                    'against PyTorch eager at batch 1 and 32. Prints ratios and PASS/MISS per goal, writes JSON.',
        epilog='example: timm-alexnet-split bench --json runs/bench.json')
    parser.add_argument('--device', default=None, help='cpu or cuda (default: cuda if available, else cpu)')
    parser.add_argument('--batch-size', type=int, default=None, help='default 32 on CPU, 256 on GPU')
    parser.add_argument('--rounds', type=int, default=5, help='timed rounds per variant (median; default 5)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed steps per variant first (default 2)')
    parser.add_argument('--img-size', type=int, default=224, help='input size (default 224)')
    parser.add_argument('--skip-onnx', action='store_true', help='skip onnxruntime vs PyTorch')
    parser.add_argument('--no-compile', action='store_true', help='on a GPU: skip the torch.compile rows')
    parser.add_argument('--profile', default=None, metavar='PATH',
                        help='also write the top kernels of one training step (torch.profiler: self CUDA time on a GPU, '
                             'self CPU time on a CPU; name, count, ms) to PATH as JSON')
    parser.add_argument('--profile-variant', default='ours', choices=['ours', 'no_lrn', 'nn_lrn', 'tv_alexnet',
                                                                      'naive_grouped'], help='--profile: which network')
    parser.add_argument('--onnx-batch-sizes', type=int, nargs='+', default=[1, 32])
    parser.add_argument('--json', default=None, help='write results here (default runs/bench/bench-<time>.json)')
    parser.add_argument('--data', action='store_true',
                        help='instead: the training input pipeline over generated ImageNet-like JPEGs, full-size folder '
                             'vs draft decoding vs 256-px shards, images/s per core and on all cores (on a GPU also '
                             'nvjpeg decoding vs training); last line: shards vs full-size folder, per core')
    parser.add_argument('--data-images', type=int, default=400, metavar='N', help='--data: images generated (default 400)')
    parser.add_argument('--data-dir', default=None, metavar='DIR',
                        help='--data, --train-input: where the temporary images go (default: the system temp folder)')
    from .trainbench import add_options
    add_options(parser)
    return parser


def _settings(args: argparse.Namespace) -> Tuple[torch.device, int, Path]:
    """(device, batch size, output path) from the options; UserError for impossible ones."""
    from .atomic import check_writable
    from .errors import UserError
    from .model import MIN_INPUT_SIZE
    from .train.devices import named_device
    device = named_device(args.device)
    batch = args.batch_size if args.batch_size is not None else (256 if device.type == 'cuda' else 32)
    if batch < 1 or args.rounds < 1 or args.warmup < 0:
        raise UserError('--batch-size and --rounds must be >= 1, --warmup >= 0')
    if args.img_size < MIN_INPUT_SIZE:
        raise UserError(f'--img-size {args.img_size} is too small: the split AlexNet needs at least {MIN_INPUT_SIZE}')
    out = Path(args.json or f'runs/bench/bench-{datetime.now().strftime("%Y%m%d-%H%M%S")}.json')
    for path, option in ((out, '--json'), (Path(args.profile) if args.profile else None, '--profile')):
        if path is not None and path.exists():
            raise UserError(f'{path} exists; choose another {option} path')
        if path is not None:
            check_writable(path, make_folder=True)  # an unwritable place: one line now, not after the timing
    return device, batch, out


def _precision(amp: bool) -> str:
    return 'bf16 autocast + channels_last' if amp else 'fp32'


def _lrn_section(results: dict, args: argparse.Namespace, device: torch.device, batch: int) -> None:
    """CPU: ours against LRN removed and nn.LocalResponseNorm, fp32, eager."""
    rows = bench_lrn(device, batch, False, False, args.rounds, args.warmup, with_tv=False, img_size=args.img_size)
    results['rows'] += rows
    print(f'\n{device.type}, batch {batch}, fp32  (images/s; ratio = ours / LRN removed, higher is better)')
    for r in rows:
        print(f'  {r["mode"]:<6}{r["variant"]:<12}{r["img_s"]:>10.1f} img/s   ratio {r["ratio_to_no_lrn"]:.3f}')


def _print_matrix(rows: List[dict], title: str) -> None:
    """One line per variant: eager and compiled images/s, compiled / eager, each against LRN removed and torchvision."""
    print(f'\n{title}  (images/s; ratios to the same-run LRN removed / torchvision alexnet, same mode)')
    print(f'  {"variant":<14}{"eager":>9}{"compiled":>10}{"comp/eager":>11}{"eager/noLRN":>12}{"eager/tv":>9}'
          f'{"comp/noLRN":>11}{"comp/tv":>8}')
    by = {(r['variant'], r['compiled']): r for r in rows}

    def cell(r, key, fmt, width):
        return f'{format(r[key], fmt) if r is not None and key in r else "-":>{width}}'
    for k in dict.fromkeys(r['variant'] for r in rows):
        e, c = by.get((k, False)), by.get((k, True))
        print(f'  {k:<14}{cell(e, "img_s", ".0f", 9)}{cell(c, "img_s", ".0f", 10)}{cell(c, "ratio_to_eager", ".2f", 11)}'
              f'{cell(e, "ratio_to_no_lrn", ".3f", 12)}{cell(e, "ratio_to_tv_alexnet", ".2f", 9)}'
              f'{cell(c, "ratio_to_no_lrn", ".3f", 11)}{cell(c, "ratio_to_tv_alexnet", ".2f", 8)}')


def _gpu_lrn_section(results: dict, args: argparse.Namespace, device: torch.device, batch: int, out: Path) -> None:
    """GPU: ours, LRN removed, nn.LocalResponseNorm, torchvision's alexnet and the naive grouped split-2, bf16 +
    channels_last and fp32, training eager and compiled (alexnet_split_3 and 4 towers eager, bf16), inference eager.
    ``out`` is rewritten after each precision: a time limit in the next one keeps what was measured."""
    compiled = None if args.no_compile else GPU_KINDS
    for amp in (True, False):
        t = time.perf_counter()
        kinds = GPU_KINDS + (TOWER_KINDS if amp else [])
        rows = bench_variants(device, batch, amp, amp, True, kinds, args.rounds, args.warmup, args.img_size, compiled)
        rows += bench_variants(device, batch, amp, amp, False, GPU_KINDS, args.rounds, args.warmup, args.img_size)
        results['rows'] += rows
        tag = f'{device.type}, batch {batch}, {_precision(amp)}'
        _print_matrix([r for r in rows if r['mode'] == 'train'], f'{tag}: training')
        _print_matrix([r for r in rows if r['mode'] == 'infer'], f'{tag}: inference')
        print(f'  ({time.perf_counter() - t:.0f} s)')
        write_text(out, json.dumps(results, indent=2), 'the benchmark')


def _gpu_section(results: dict, args: argparse.Namespace, device: torch.device, batch: int) -> None:
    """The towers placed with --model-parallel against the unplaced model."""
    placements = [['cuda:0', 'cuda:0']] + ([['cuda:0', 'cuda:1']] if torch.cuda.device_count() > 1 else [])
    p_rows = bench_placement(device, batch, True, args.rounds, args.warmup, placements, img_size=args.img_size)
    results['rows'] += p_rows
    print('\n--model-parallel: towers placed vs the unplaced model (train, bf16)')
    for r in p_rows:
        print(f'  {r["towers_on"]:<18}{r["img_s"]:>10.1f} img/s   ratio {r["ratio_to_unplaced"]:.3f}')


def profile_step(kind: str, device: torch.device, batch: int, amp: bool, channels_last: bool, img_size: int = 224,
                 top: int = 30) -> dict:
    """The ``top`` kernels of one training step of ``kind`` by self time (torch.profiler; on a GPU the CUDA kernels'
    self device time, on a CPU the operators' self CPU time), after three warm-up steps."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    x, y = _inputs(device, batch, img_size, channels_last)
    step = _stepper(_models([kind], device, channels_last)[kind], x, y, True, amp)
    for _ in range(3):
        step()
    _sync(device)
    gpu = device.type == 'cuda'
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])) as prof:
        step()
        _sync(device)
    events = prof.key_averages()
    if gpu:
        events = [e for e in events if e.device_type == DeviceType.CUDA] or list(events)
    self_us = (lambda e: e.self_device_time_total) if gpu else (lambda e: e.self_cpu_time_total)
    events = sorted((e for e in events if self_us(e) > 0), key=self_us, reverse=True)
    total = sum(self_us(e) for e in events) / 1e3
    kernels = [dict(name=e.key, count=e.count, self_ms=round(self_us(e) / 1e3, 4),
                    share=round(self_us(e) / 1e3 / total, 4) if total else 0.0) for e in events[:top]]
    return dict(variant=kind, batch=batch, amp_bf16=amp, channels_last=channels_last,
                time='self CUDA time' if gpu else 'self CPU time', total_self_ms=round(total, 3), kernels=kernels)


def _profile_section(results: dict, args: argparse.Namespace, device: torch.device, batch: int) -> None:
    """``--profile PATH``: one training step's top kernels, as JSON; the first ten printed."""
    from .atomic import replace_when_done
    gpu = device.type == 'cuda'
    prof = profile_step(args.profile_variant, device, batch, gpu, gpu, args.img_size)
    prof.update(machine=results['machine'], date=results['date'], lrn_kernels=results['lrn_kernels'])
    with replace_when_done(Path(args.profile), overwrite=False, during='the profile', make_folder=True) as tmp:
        Path(tmp).write_text(json.dumps(prof, indent=2))
    print(f'\nprofile of one training step, {args.profile_variant}, {_precision(gpu)} '
          f'({prof["time"]}, {prof["total_self_ms"]:.2f} ms in all; {args.profile}):')
    for k in prof['kernels'][:10]:
        print(f'  {k["self_ms"]:>9.3f} ms {k["share"]:>6.1%} x{k["count"]:<4} {k["name"][:90]}')


def _onnx_section(results: dict, args: argparse.Namespace) -> None:
    """onnxruntime against PyTorch eager with one thread and with torch's threads."""
    try:
        from .ort_bench import bench_onnxruntime
    except ImportError:
        print('\nonnxruntime vs PyTorch: export module not available, skipped')
        return
    ort_rows = []
    for threads in sorted({1, torch.get_num_threads()}):
        ort_rows += bench_onnxruntime('alexnet_split_2', batch_sizes=tuple(args.onnx_batch_sizes), threads=threads)
    results['onnxruntime'] = ort_rows
    print('\nonnxruntime (CPU) vs PyTorch eager, alexnet_split_2 inference (ratio = ort / torch; goal >= 1);\n'
          'export with LRN as ONNX LRN nodes (default) and as elementary ops (export --lrn ops)')
    for r in ort_rows:
        print(f'  threads {r["threads"]}, batch {r["batch_size"]:>3}, --lrn {r["lrn_form"]:<4}: '
              f'torch {r["torch_img_s"]:.1f} img/s, onnxruntime {r["ort_img_s"]:.1f} img/s, ratio {r["ratio"]:.2f}')


def _row(rows: List[dict], variant: str, compiled: bool = False, amp: Optional[bool] = None) -> Optional[dict]:
    """The training row of ``variant`` (bf16 where ``amp``, fp32 where not, either where None), or None."""
    for r in rows:
        if (r.get('mode') == 'train' and r.get('variant') == variant and r.get('compiled', False) == compiled
                and 'towers_on' not in r and (amp is None or r['amp_bf16'] == amp)):
            return r
    return None


def goals(results: dict, device_type: str) -> List[Tuple[str, str, bool]]:
    """(key, what, met) for each goal the run measured: the LRN ratio on this device; on a GPU also split-2 against
    torchvision, torch.compile against eager, and 3 and 4 towers against split-2."""
    rows, out = results['rows'], []
    lrn_goal = LRN_GOAL.get(device_type, LRN_GOAL['cpu'])
    for amp in ([True] if device_type == 'cuda' else [False]):  # the goal's precision
        for comp in (False, True):
            r = _row(rows, 'ours', comp, amp)
            if r is not None:
                mode = f'{"compiled" if comp else "eager"}, {_precision(amp)}, batch {r["batch"]}'
                tag = ' compiled' if comp else ''
                out.append(('lrn' + tag, f'train ratio ours / LRN removed {r["ratio_to_no_lrn"]:.3f} >= {lrn_goal} ({mode})',
                            r['ratio_to_no_lrn'] >= lrn_goal))
                if 'ratio_to_tv_alexnet' in r:
                    tv = r['ratio_to_tv_alexnet']
                    out.append(('vs_tv' + tag, f'train ratio alexnet_split_2 / torchvision alexnet {tv:.3f} >= '
                                f'{TV_GOAL} ({mode})', tv >= TV_GOAL))
    compiled = [r for r in rows if r.get('mode') == 'train' and r.get('compiled') and 'ratio_to_eager' in r]
    if compiled:
        worst = min(compiled, key=lambda r: r['ratio_to_eager'])
        out.append(('compile', f'torch.compile never slower than eager in training: worst {worst["ratio_to_eager"]:.3f}x '
                    f'({worst["variant"]}, {_precision(worst["amp_bf16"])}; {len(compiled)} variants)',
                    worst['ratio_to_eager'] >= 1.0))
    split2 = _row(rows, 'ours', False, True)
    for kind, name in (('split_3', 'alexnet_split_3'), ('towers_4', 'num_towers=4')):
        r = _row(rows, kind, False, True)
        if r is not None and split2 is not None:
            ratio = r['img_s'] / split2['img_s']
            out.append((kind, f'train {name} / alexnet_split_2 {ratio:.3f} >= {TOWERS_GOAL} (eager, bf16)', ratio >= TOWERS_GOAL))
    return out


def _print_goals(results: dict, device_type: str = 'cpu') -> None:
    results['goals'] = [dict(key=k, goal=g, met=ok) for k, g, ok in goals(results, device_type)]
    print()
    for g in results['goals']:
        print(f'goal: {g["goal"]}: {"PASS" if g["met"] else "MISS"}')


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    device, batch, out = _settings(args)
    gpu = device.type == 'cuda'
    if gpu:
        torch.backends.cudnn.benchmark = True
    if args.data:
        return _data_main(args, device, out)
    if args.train_input:
        from .trainbench import main as train_input_main
        return train_input_main(args, device, batch, out, _machine())

    from .lrn import lrn_mode
    from .perf import tune_malloc
    malloc = 'kept in process' if tune_malloc() else 'default'
    print(f'machine: {_machine()}')
    print(f'LRN kernels on {device.type}: {lrn_mode(device.type)}; malloc: {malloc} (TIMM_ALEXNET_SPLIT_MALLOC=default: off)')
    results: dict = dict(machine=_machine(), date=datetime.now(timezone.utc).isoformat(timespec='seconds'),
                         lrn_kernels=lrn_mode(device.type), malloc=malloc, rows=[])
    out.parent.mkdir(parents=True, exist_ok=True)
    if gpu:
        _gpu_lrn_section(results, args, device, batch, out)  # writes out as it goes
        _gpu_section(results, args, device, batch)
    else:
        _lrn_section(results, args, device, batch)
    if args.profile:
        _profile_section(results, args, device, batch)
    if not args.skip_onnx:
        _onnx_section(results, args)
    _print_goals(results, device.type)
    write_text(out, json.dumps(results, indent=2), 'the benchmark', make_folder=True)
    print(f'\nwrote {out}')
    return 0
