"""The `transformer-mt` command line: parse, validate, call the library, print."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path

from .errors import TransformerMTError

log = logging.getLogger("transformer_mt")


# ---- flags from dataclasses ---------------------------------------------------


def add_fields(parser: argparse.ArgumentParser, cls, skip=(), optional=False) -> None:
    """One --flag per dataclass field, typed and documented from the field. With
    ``optional`` every default is None (meaning: keep the preset's value)."""
    group = parser.add_argument_group(cls.__name__)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        kind = f.type if isinstance(f.type, type) else eval(f.type)  # noqa: S307
        if kind is bool:
            group.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=None if optional else f.default,
                help=help_text,
            )
        else:
            default = None if optional else f.default
            group.add_argument(
                flag,
                type=kind,
                default=default,
                help=f"{help_text} (default: {f.default})",
            )


def pick_fields(args: argparse.Namespace, cls, skip=()) -> dict:
    return {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(cls)
        if f.name not in skip and getattr(args, f.name, None) is not None
    }


# ---- subcommands ----------------------------------------------------------------


def cmd_prepare(args) -> None:
    from .data import multi30k
    from .data.prepare import DataConfig, SplitFiles, prepare

    config = DataConfig(**pick_fields(args, DataConfig))
    if args.dataset == "multi30k":
        files = multi30k.locate(args.src_lang, args.tgt_lang, args.data_dir, args.cache)
        splits = [SplitFiles(name, *paths) for name, paths in files.items()]
    elif args.dataset:
        raise TransformerMTError(f"unknown dataset {args.dataset!r}; known: multi30k")
    else:
        if not (args.train_src and args.train_tgt):
            raise TransformerMTError(
                "give --train-src and --train-tgt, or --dataset multi30k"
            )
        splits = [SplitFiles("train", Path(args.train_src), Path(args.train_tgt))]
        for name in ("valid", "test"):
            src, tgt = getattr(args, f"{name}_src"), getattr(args, f"{name}_tgt")
            if bool(src) != bool(tgt):
                raise TransformerMTError(f"give both --{name}-src and --{name}-tgt")
            if src:
                splits.append(SplitFiles(name, Path(src), Path(tgt)))
    summary = prepare(splits, args.out, config, args.src_lang, args.tgt_lang)
    print(json.dumps(summary["splits"], indent=2))


def model_config_from(args):
    from .model import ModelConfig, preset

    return preset(
        args.preset, **pick_fields(args, ModelConfig, skip=("vocab_size", "pad_id"))
    )


def cmd_train(args) -> None:
    from .model import ModelConfig  # noqa: F401  (validates the flags first)
    from .train.config import TrainConfig
    from .train.trainer import train

    config = TrainConfig(**pick_fields(args, TrainConfig))
    summary = train(
        config, model_config_from(args), args.data, args.save_dir, args.resume
    )
    if summary.get("stop_reason", "").startswith("interrupted"):
        log.warning(
            "interrupted: checkpoint saved in %s; continue with --resume", args.save_dir
        )
    print(json.dumps(summary))


def cmd_average(args) -> None:
    from .average import average_checkpoints, average_last

    if args.checkpoints:
        out = average_checkpoints(args.checkpoints, args.out or "averaged")
    elif args.run:
        out = average_last(args.run, args.last, args.out)
    else:
        raise TransformerMTError(
            "give --run DIR (with --last N) or --checkpoints A B ..."
        )
    print(out)


def read_input_lines(path: str | None) -> list[str]:
    from .data.text import decode_line, read_lines

    if path and path != "-":
        return read_lines(path)
    return [decode_line(raw, "<stdin>", n) for n, raw in enumerate(sys.stdin.buffer, 1)]


def load_translator(args):
    import torch

    from .decode import DecodeConfig
    from .export.backends import load_translator as load_backend
    from .train.state import pick_device

    if args.threads:
        torch.set_num_threads(args.threads)
    return load_backend(
        args.backend,
        args.checkpoint,
        DecodeConfig(**pick_fields(args, DecodeConfig)),
        str(pick_device(args.device)),
        args.threads,
        args.quantize,
    )


# Characters that end a line for some reader (str.splitlines, editors): a
# translation containing one would shift every following output line.
LINE_BREAKS = str.maketrans(dict.fromkeys("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029", " "))


def one_line(text: str) -> str:
    return text.translate(LINE_BREAKS)


def write_output(path: str | None, lines: list[str]) -> None:
    """Write ``lines`` to ``path`` (stdout if None); a full disk or a bad path is
    a one-line error."""
    try:
        if path:
            with open(path, "w", encoding="utf-8") as out:
                out.writelines(line + "\n" for line in lines)
        else:
            sys.stdout.writelines(line + "\n" for line in lines)
            sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise TransformerMTError(
            f"cannot write translations to {path or '<stdout>'}: {exc.strerror or exc}"
        ) from None


def cmd_translate(args) -> None:
    lines = read_input_lines(args.input)
    translator = load_translator(args)
    started = time.monotonic()
    if translator.config.nbest > 1:
        results = [
            f"{i}\t{score:.4f}\t{one_line(text)}"
            for i, hyps in enumerate(translator.translate_nbest(lines))
            for text, score in hyps
        ]
    else:
        results = [one_line(text) for text in translator.translate(lines)]
    write_output(args.output, results)
    log.info("translated %d lines in %.1fs", len(lines), time.monotonic() - started)


def cmd_evaluate(args) -> None:
    from .data.text import read_lines
    from .evaluate import score

    if args.hyp:
        if not args.ref:
            raise TransformerMTError("--hyp needs --ref")
        hyps, refs = read_lines(args.hyp), read_lines(args.ref)
    elif args.checkpoint and args.data:
        data = Path(args.data)
        src_path, ref_path = (
            data / f"{args.split}.src.txt",
            data / f"{args.split}.tgt.txt",
        )
        if not src_path.exists():
            raise TransformerMTError(f"{data}: split {args.split!r} was not prepared")
        translator = load_translator(args)
        hyps, refs = translator.translate(read_lines(src_path)), read_lines(ref_path)
        if args.output:
            write_output(args.output, [one_line(h) for h in hyps])
    else:
        raise TransformerMTError("give --hyp and --ref, or --checkpoint and --data")
    result = score(hyps, refs, lowercase=args.lowercase)
    print(json.dumps(result, indent=2))


def cmd_attention(args) -> None:
    from . import checkpoint
    from .inspect.attention import attention_maps, plot_attention

    ckpt = checkpoint.load(args.checkpoint)
    maps = attention_maps(ckpt.build_model(), ckpt.vocab, args.text)
    print(plot_attention(maps, args.out, args.kind, args.layer, args.head))


def cmd_plot(args) -> None:
    from .inspect.plots import plot_metrics

    print(plot_metrics(args.metrics, args.out, args.x))


def cmd_info(args) -> None:
    from .inspect.info import model_facts
    from .model import ModelConfig

    overrides = pick_fields(args, ModelConfig, skip=("vocab_size", "pad_id"))
    if args.checkpoint:
        if args.preset or overrides or args.vocab_size:
            raise TransformerMTError(
                "give --checkpoint alone, or --preset with model flags"
            )
        from . import checkpoint

        ckpt = checkpoint.load(args.checkpoint)
        config, source = ckpt.model_config, str(ckpt.directory)
    else:
        args.preset = args.preset or "base"
        config, source = model_config_from(args), f"preset {args.preset}"
        if args.vocab_size:
            config = config.replace(vocab_size=args.vocab_size)
        source += " (with overrides)" if overrides else ""
    facts = model_facts(config, args.batch_tokens, args.seq_len, source)
    print(json.dumps(facts.to_dict(), indent=2) if args.json else facts.table())


def cmd_serve(args) -> None:
    import torch

    from .serve import ServeConfig, run_server
    from .train.state import pick_device

    if args.threads:
        torch.set_num_threads(args.threads)
    config = ServeConfig(**pick_fields(args, ServeConfig))
    run_server(args.checkpoint, config, device=str(pick_device(args.device)))


def cmd_export(args) -> None:
    from .export import FORMATS

    if args.format == "ctranslate2":
        from .export.ctranslate2 import export

        out = export(args.checkpoint, args.out, args.quantization)
    elif args.format == "onnx":
        from .export.onnx import export

        if args.quantization != "float32":
            raise TransformerMTError("--quantization applies to ctranslate2 only")
        out = export(args.checkpoint, args.out)
    else:
        raise TransformerMTError(
            f"unknown format {args.format!r}; choose one of {', '.join(FORMATS)}"
        )
    print(out)


# ---- parser ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from .data.prepare import DataConfig
    from .decode import DecodeConfig
    from .model import PRESETS, ModelConfig
    from .serve.config import ServeConfig
    from .train.config import TrainConfig

    parser = argparse.ArgumentParser(
        prog="transformer-mt",
        description="Train, run and score Transformer translation models.",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="only warnings and errors"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="check text, train the subword model, encode")
    p.add_argument("--out", required=True, help="prepared data directory to write")
    p.add_argument("--dataset", help="a named corpus instead of files: multi30k")
    p.add_argument("--data-dir", help="local copy of the named corpus (else download)")
    p.add_argument("--cache", help="download cache (default ~/.cache/transformer_mt)")
    p.add_argument("--src-lang", default="src", help="source language code")
    p.add_argument("--tgt-lang", default="tgt", help="target language code")
    for split in ("train", "valid", "test"):
        p.add_argument(f"--{split}-src", help=f"{split} source file (.gz allowed)")
        p.add_argument(f"--{split}-tgt", help=f"{split} target file (.gz allowed)")
    add_fields(p, DataConfig)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", help="train a model on a prepared directory")
    p.add_argument("--data", required=True, help="prepared data directory")
    p.add_argument("--save-dir", required=True, help="run directory for checkpoints")
    p.add_argument(
        "--resume", action="store_true", help="continue from the latest checkpoint"
    )
    p.add_argument(
        "--preset", default="small", choices=list(PRESETS), help="model size"
    )
    add_fields(p, ModelConfig, skip=("vocab_size", "pad_id"), optional=True)
    add_fields(p, TrainConfig)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("average", help="average the weights of checkpoints")
    p.add_argument("--run", help="run directory: average its last N step checkpoints")
    p.add_argument("--last", type=int, default=5, help="how many (default 5)")
    p.add_argument("--checkpoints", nargs="+", help="explicit checkpoint directories")
    p.add_argument("--out", help="output checkpoint directory (default RUN/averaged)")
    p.set_defaults(func=cmd_average)

    for name, func, helptext in (
        ("translate", cmd_translate, "translate lines from a file or stdin"),
        ("evaluate", cmd_evaluate, "sacreBLEU BLEU and chrF of a model or a file"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument(
            "--checkpoint",
            required=name == "translate",
            help="checkpoint or run directory",
        )
        p.add_argument("--device", default="cpu", help="cpu, cuda, auto")
        p.add_argument(
            "--threads", type=int, default=0, help="CPU threads (0: default)"
        )
        p.add_argument(
            "--backend",
            default="torch",
            choices=("torch", "ctranslate2", "onnx"),
            help="inference engine; ctranslate2/onnx take an exported directory "
            "or export the checkpoint on the fly (default torch)",
        )
        p.add_argument(
            "--quantize",
            default="none",
            choices=("none", "int8"),
            help="int8 weights for CPU decoding (torch, ctranslate2)",
        )
        p.add_argument("--output", help="write translations here (default stdout)")
        add_fields(p, DecodeConfig)
        if name == "translate":
            p.add_argument("--input", help="input file (default stdin)")
        else:
            p.add_argument("--hyp", help="file of translations to score")
            p.add_argument("--ref", help="file of references")
            p.add_argument(
                "--data", help="prepared directory: translate and score a split"
            )
            p.add_argument(
                "--split", default="test", help="split to score (default test)"
            )
            p.add_argument(
                "--lowercase", action="store_true", help="case-insensitive BLEU"
            )
        p.set_defaults(func=func)
    add_export_parser(sub)
    add_inspect_parsers(sub)

    p = sub.add_parser("serve", help="HTTP translation API and web page")
    p.add_argument("--checkpoint", required=True, help="checkpoint or run directory")
    p.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: default)")
    add_fields(p, ServeConfig)
    p.set_defaults(func=cmd_serve)
    return parser


def add_export_parser(sub) -> None:
    p = sub.add_parser("export", help="write a checkpoint for CTranslate2 or ONNX")
    p.add_argument("--checkpoint", required=True, help="checkpoint or run directory")
    p.add_argument("--format", required=True, help="ctranslate2 or onnx")
    p.add_argument("--out", required=True, help="directory to write (replaced)")
    p.add_argument(
        "--quantization",
        default="float32",
        help="ctranslate2 weights: float32 or int8 (default float32)",
    )
    p.set_defaults(func=cmd_export)


def add_inspect_parsers(sub) -> None:
    from .model import PRESETS, ModelConfig

    p = sub.add_parser("attention", help="heat maps of one sentence's attention")
    p.add_argument("--checkpoint", required=True, help="checkpoint or run directory")
    p.add_argument("--text", required=True, help="source sentence to translate")
    p.add_argument("--out", required=True, help="image to write (.png, .pdf, .svg)")
    p.add_argument("--layer", type=int, help="layer, from 1 (default: the last)")
    p.add_argument("--head", type=int, help="one head, from 1 (default: all)")
    p.add_argument(
        "--kind", default="all", choices=("encoder", "decoder", "cross", "all")
    )
    p.set_defaults(func=cmd_attention)

    p = sub.add_parser("plot", help="training curves of one or more runs")
    p.add_argument("metrics", nargs="+", help="metrics.jsonl files")
    p.add_argument("--out", required=True, help="image to write (.png, .pdf, .svg)")
    p.add_argument(
        "--x", default="step", choices=("step", "time"), help="x axis (default step)"
    )
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("info", help="parameters, FLOPs and memory of a model")
    p.add_argument("--checkpoint", help="describe this checkpoint instead of a preset")
    p.add_argument("--preset", choices=list(PRESETS), help="model size (default base)")
    p.add_argument("--vocab-size", type=int, help="vocabulary (default 8000)")
    p.add_argument(
        "--batch-tokens", type=int, default=4096, help="tokens per training batch"
    )
    p.add_argument(
        "--seq-len", type=int, default=30, help="subwords per sentence (attention)"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead")
    add_fields(p, ModelConfig, skip=("vocab_size", "pad_id"), optional=True)
    p.set_defaults(func=cmd_info)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Under torchrun only rank 0 reports progress; other ranks say only problems.
    other_rank = int(os.environ.get("RANK", "0")) > 0
    logging.basicConfig(
        level=logging.WARNING if args.quiet or other_rank else logging.INFO,
        format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    try:
        args.func(args)
    except TransformerMTError as exc:
        print(f"transformer-mt {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"transformer-mt {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
