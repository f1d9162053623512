"""The ``needle`` command: ``needle train``, ``eval``, ``generate`` and ``graph``.

``needle train`` trains an image classifier — the MLP ResNet (default), a small CNN or
ResNet9, on Fashion-MNIST (default), MNIST or CIFAR-10 — or a language model (``rnn-lm``,
``lstm-lm``, ``transformer-lm`` on the KJV or PTB-format text), with a progress bar, one
summary line per epoch, and a checkpoint, a metrics CSV and loss/error (and perplexity)
curves in ``--out`` after every epoch (the checkpoint also every ``--checkpoint-every``,
in mid-epoch); ``--resume`` continues a run bit-identically.
Options not given take the defaults of the ``--model``'s task (image models: the
course's recipe; language models: their own, :data:`needle.tasks.language.DEFAULTS`).
``needle eval --checkpoint PATH`` re-evaluates a saved model on the test set (without
``--checkpoint``: the latest run, ``runs/latest``).
``needle generate --checkpoint PATH --prompt TEXT`` samples text from a language model.
``mpiexec -n N needle train ...`` trains data-parallel on N processes (MPI is joined
automatically when the launcher starts more than one; ``--distributed`` forces it).
``needle graph`` draws a computational graph or traces a backward pass
(:mod:`needle.viz.command`, docs/viz.md). See ``docs/training.md``,
``docs/distributed.md`` and :mod:`needle.training`.

Exit status: 0 on success, 2 for a usage problem (bad option, missing or damaged data
files, unreadable or invalid checkpoint, mismatched resume, unwritable ``--out``, a model
too large for the memory, a run that diverged to NaN: see ``--on-nonfinite``), with a
one-line ``needle …: error:`` message naming the option or file; 130 after Ctrl-C. A
traceback is printed only for an error in needle itself. In a job of several processes,
an error on any rank prints ``needle train: error (rank R of N): …`` and ends the whole
job (``MPI_Abort``) with that status, so no rank is left waiting for it.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import traceback
from collections.abc import Callable, Sequence

import needle as ndl
from needle import distributed, options, tasks, training
from needle.options import NetworkOptions, RunOptions, TrainConfig
from needle.viz import command as viz_command

__all__ = ["build_parser", "main"]

EXIT_USAGE = 2
#: The checkpoint of ``needle train``'s default ``--out``: what ``needle eval`` reads by default.
LATEST_CHECKPOINT = f"{RunOptions.out}/{training.CHECKPOINT_NAME}"


# ----- option types (argparse turns their ArgumentTypeError into a usage error) --------


def _option_type(rule: options.Rule) -> Callable[[str], object]:
    """An argparse ``type=`` that parses with ``rule`` (:mod:`needle.options`)."""

    def parse(text: str) -> object:
        try:
            return rule.parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = rule.what  # argparse names the type in some messages
    return parse


def _field_type(name: str) -> Callable[[str], object]:
    """The ``type=`` of the TrainConfig option ``name`` (its rule, :func:`options.rule_of`)."""
    return _option_type(options.rule_of(name))


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line: the problem, then where help is."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ----- the parser -------------------------------------------------------------------------


def build_parser(
    *,
    with_defaults: bool = True,
    model: str | None = None,
) -> argparse.ArgumentParser:
    """The ``needle`` argument parser.

    Args:
        with_defaults: False gives a parser whose result holds only the options given
            on the command line (used to tell them apart when resuming).
        model: the ``--model`` whose task's defaults ``needle train`` shows (in its help
            and in the parsed result); None: the default model's.

    Example:
        >>> args = build_parser().parse_args(["train", "--epochs", "3"])
        >>> args.command, args.epochs, args.batch_size
        ('train', 3, 100)
        >>> build_parser(model="lstm-lm").parse_args(["train"]).batch_size
        16
    """
    parser = _Parser(
        prog="needle", description="needle: train and evaluate models from the command line."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    suppress = {} if with_defaults else {"argument_default": argparse.SUPPRESS}
    defaults = TrainConfig.for_task(**({} if model is None else {"model": model})).options()
    train = commands.add_parser(
        "train",
        help="train an image classifier or a language model",
        **suppress,
        description="Train a model (default: the course's MLP ResNet on Fashion-MNIST); "
        "checkpoint, metrics.csv and curves.png are written into --out after "
        "every epoch. The defaults shown are those of "
        f"--model {defaults['model']}'s task: image models and language "
        "models (*-lm) have their own; see them with, e.g., "
        "needle train --model lstm-lm --help.",
    )
    _add_train_options(train, defaults)
    if with_defaults:
        # dataset None: TrainConfig picks the model's task's first dataset
        train.set_defaults(
            **{**defaults, "dataset": None},
            resume=False,
            progress=True,
            quiet=False,
            distributed=False,
        )
    evaluate = commands.add_parser(
        "eval",
        help="evaluate a saved checkpoint on the test set",
        **suppress,
        description="Rebuild the model saved in a training checkpoint and print its test "
        "loss and error. Every option not given, --dataset included, is the "
        "one the checkpoint's run was trained with.",
    )
    _add_eval_options(evaluate)
    generate = commands.add_parser(
        "generate",
        help="sample text from a language-model checkpoint",
        **suppress,
        description="Continue a prompt with words sampled from a language model saved by "
        "needle train --model rnn-lm|lstm-lm|transformer-lm.",
    )
    _add_generate_options(generate)
    viz_command.add_parser(commands)
    return parser


def _add_data_options(group: argparse._ActionsContainer, dataset_help: str) -> None:
    """--dataset, --data-dir, --download (shared by train and eval)."""
    group.add_argument("--dataset", choices=tasks.dataset_names(), help=dataset_help)
    group.add_argument(
        "--data-dir",
        metavar="DIR",
        type=_field_type("data_dir"),
        help="a folder searched first for the IDX files "
        "(train-images-idx3-ubyte[.gz], ...); for cifar10 the "
        "cifar-10-batches-py folder or its parent; for ptb (and kjv) "
        "the folder of train.txt, valid.txt, test.txt",
    )
    group.add_argument(
        "--download",
        action="store_true",
        help="download missing data files (verified) into --data-dir or the cache folder",
    )


def _add_train_options(parser: argparse.ArgumentParser, d: dict) -> None:
    """Every option of ``needle train``; ``d``: the defaults its help shows."""
    group = parser.add_argument_group("data")
    _add_data_options(
        group,
        "the dataset (default: the first of the model's task: "
        "fashion-mnist for image models, kjv for language models)",
    )
    group.add_argument(
        "--limit-train",
        type=_field_type("limit_train"),
        metavar="N",
        help="use only the first N training samples (tokens for text)",
    )
    group.add_argument(
        "--limit-test",
        type=_field_type("limit_test"),
        metavar="N",
        help="use only the first N test samples (tokens for text)",
    )
    group.add_argument(
        "--augment",
        action="store_true",
        help="random horizontal flips and crops of the training images",
    )
    group.add_argument(
        "--crop-padding",
        type=_field_type("crop_padding"),
        metavar="PX",
        help=f"maximal shift of the random crop, in pixels (default: {d['crop_padding']})",
    )
    group = parser.add_argument_group("network")
    group.add_argument(
        "--model",
        choices=tasks.model_names(),
        help=f"the network (default: {NetworkOptions.model}; see docs/training.md)",
    )
    group.add_argument(
        "--hidden-dim",
        type=_field_type("hidden_dim"),
        help=f"mlp-resnet: width; *-lm: hidden size (default: {d['hidden_dim']})",
    )
    group.add_argument(
        "--num-blocks",
        type=_field_type("num_blocks"),
        help=f"mlp-resnet: residual blocks (default: {d['num_blocks']})",
    )
    group.add_argument(
        "--drop-prob",
        type=_field_type("drop_prob"),
        help=f"mlp-resnet, *-lm: dropout (default: {d['drop_prob']:g})",
    )
    group.add_argument(
        "--width",
        type=_field_type("width"),
        help=f"cnn: channels of the first block (default: {d['width']})",
    )
    group.add_argument(
        "--embedding-dim",
        type=_field_type("embedding_dim"),
        help=f"*-lm: word-embedding size (default: {d['embedding_dim']})",
    )
    group.add_argument(
        "--num-layers",
        type=_field_type("num_layers"),
        help=f"*-lm: RNN/LSTM/Transformer layers (default: {d['num_layers']})",
    )
    group.add_argument(
        "--seq-len",
        type=_field_type("seq_len"),
        help=f"*-lm: tokens per BPTT chunk (default: {d['seq_len']})",
    )
    _add_optim_options(parser.add_argument_group("optimisation"), d)
    group = parser.add_argument_group("run")
    group.add_argument(
        "--seed",
        type=_field_type("seed"),
        help=f"seeds NumPy once, before the model is built (default: {d['seed']})",
    )
    group.add_argument(
        "--on-nonfinite",
        choices=options.ON_NONFINITE,
        help="a training loss or gradient that is NaN or infinite: stop "
        "(the default; the last checkpoint is kept and the message "
        "says how to resume with a smaller --lr) or skip-batch (that "
        "step is not taken); a checkpoint never holds non-finite weights",
    )
    group.add_argument(
        "--checkpoint-every",
        metavar="WHEN",
        type=_field_type("checkpoint_every"),
        help=f"also save the checkpoint in mid-epoch (with the exact position "
        f"in the epoch, so --resume goes on from there): a time (30s, 5m, "
        f"1h), a number of optimizer steps (200), or epoch (or 0) for the "
        f"end of each epoch only (default: {d['checkpoint_every']})",
    )
    group.add_argument(
        "--out",
        metavar="DIR",
        type=_field_type("out"),
        help=f"output folder (default: {d['out']}; a run already there is "
        f"replaced, and the first line says so)",
    )
    group.add_argument(
        "--resume",
        action="store_true",
        help="continue the run saved in --out; options not given are "
        "taken from its checkpoint. --epochs and --lr may change "
        "(more epochs continue the run), except that a cosine "
        "schedule spans exactly its --epochs: it cannot be extended "
        "(nor can onecycle)",
    )
    group.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bar (it is also off when stderr is not a terminal)",
    )
    group.add_argument(
        "--quiet", "-q", action="store_true", help="no progress bar and no per-epoch lines"
    )
    group.add_argument(
        "--distributed",
        action="store_true",
        help="train data-parallel over MPI: start with mpiexec -n N; "
        "--batch-size is per process (automatic when mpiexec starts "
        "more than one process; needs needle-dl[distributed])",
    )


def _add_optim_options(group: argparse._ActionsContainer, d: dict) -> None:
    """The optimisation options of ``needle train``; ``d``: the defaults its help shows."""
    group.add_argument(
        "--epochs", type=_field_type("epochs"), help=f"total epochs (default: {d['epochs']})"
    )
    group.add_argument(
        "--batch-size",
        type=_field_type("batch_size"),
        help=f"samples per batch; *-lm: columns of the text (default: {d['batch_size']})",
    )
    group.add_argument(
        "--optimizer",
        choices=options.OPTIMIZERS,
        help=f"adamw: Adam with decoupled weight decay (default: {d['optimizer']})",
    )
    group.add_argument(
        "--lr",
        type=_field_type("lr"),
        help=f"learning rate (default: {d['lr']:g}); the peak of onecycle",
    )
    group.add_argument(
        "--weight-decay", type=_field_type("weight_decay"), help=f"(default: {d['weight_decay']:g})"
    )
    group.add_argument(
        "--no-decay-norm-bias",
        action="store_true",
        help="no weight decay for biases and normalisation weights (every "
        "parameter with one dimension or a name ending in bias)",
    )
    group.add_argument(
        "--momentum",
        type=_field_type("momentum"),
        help=f"SGD momentum (default: {d['momentum']:g})",
    )
    group.add_argument(
        "--scheduler",
        choices=options.SCHEDULERS,
        help=f"learning-rate schedule: per epoch step, cosine (to 0 over "
        f"exactly --epochs) or plateau (times --gamma after more than "
        f"--patience epochs without a lower test loss); per optimizer "
        f"step onecycle (default: {d['scheduler']})",
    )
    group.add_argument(
        "--step-size",
        type=_field_type("step_size"),
        help=f"epochs between decays of the step schedule (default: {d['step_size']})",
    )
    group.add_argument(
        "--gamma",
        type=_field_type("gamma"),
        help=f"decay factor of the step and plateau schedules (default: {d['gamma']:g})",
    )
    group.add_argument(
        "--patience",
        type=_field_type("patience"),
        metavar="EPOCHS",
        help=f"plateau: epochs without improvement before a decay (default: {d['patience']})",
    )
    group.add_argument(
        "--warmup-steps",
        type=_field_type("warmup_steps"),
        metavar="N",
        help=f"raise the learning rate linearly from 0 over the first N "
        f"optimizer steps, then follow --scheduler (step and cosine "
        f"then count optimizer steps) (default: {d['warmup_steps']})",
    )
    group.add_argument(
        "--grad-accum",
        type=_field_type("grad_accum"),
        metavar="N",
        help=f"N batches (micro-batches) per optimizer step, each loss "
        f"scaled by 1/N: the step of a batch N times larger "
        f"(default: {d['grad_accum']})",
    )
    clip = "no clipping" if d["clip_grad"] is None else f"{d['clip_grad']:g}"
    group.add_argument(
        "--clip-grad",
        type=_field_type("clip_grad"),
        metavar="NORM",
        help=f"clip the global gradient norm to NORM (default: {clip})",
    )


def _add_eval_options(parser: argparse.ArgumentParser) -> None:
    """Every option of ``needle eval``."""
    parser.add_argument(
        "--checkpoint",
        metavar="PATH",
        type=_option_type(options.PATH),
        help=f"a checkpoint.npz written by needle train (default: the "
        f"latest run's, {LATEST_CHECKPOINT})",
    )
    _add_data_options(parser, "the dataset (default: the checkpoint's)")
    parser.add_argument(
        "--batch-size", type=_field_type("batch_size"), help="(default: the checkpoint's)"
    )
    parser.add_argument(
        "--limit-test",
        type=_field_type("limit_test"),
        metavar="N",
        help="use only the first N test samples (default: the checkpoint's)",
    )


def _add_generate_options(parser: argparse.ArgumentParser) -> None:
    """Every option of ``needle generate``."""
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="PATH",
        type=_option_type(options.PATH),
        help="a checkpoint.npz written by needle train --model *-lm",
    )
    parser.add_argument(
        "--prompt",
        default="",
        metavar="TEXT",
        help="the text to continue (default: none, start a line)",
    )
    parser.add_argument(
        "--length",
        type=_option_type(options.POSITIVE_INT),
        default=50,
        metavar="N",
        help="words to generate (default: 50)",
    )
    parser.add_argument(
        "--temperature",
        type=_option_type(options.NON_NEGATIVE_FLOAT),
        default=1.0,
        metavar="T",
        help="divides the logits before sampling; 0 always takes the most likely word (default: 1)",
    )
    parser.add_argument(
        "--seed", type=_option_type(options.SEED), default=0, help="seeds the sampling (default: 0)"
    )


# ----- commands ---------------------------------------------------------------------------


def _train_command(args: argparse.Namespace, explicit: dict) -> None:
    """Run ``needle train``."""
    fields = set(options.GROUP_OF)
    if args.resume:
        overrides = {k: v for k, v in explicit.items() if k in fields}
        config = training.resume_config(args.out, overrides)
    else:  # the options given, and the defaults of the model's task for the others
        config = TrainConfig.for_task(**{k: v for k, v in explicit.items() if k in fields})
    log = None if args.quiet else _print_line
    training.train(config, resume=args.resume, progress=args.progress and not args.quiet, log=log)


def _eval_command(args: argparse.Namespace, explicit: dict) -> None:
    """Run ``needle eval``; options not given are the checkpoint's."""
    overrides = {k: v for k, v in explicit.items() if k not in {"command", "checkpoint"}}
    path = args.checkpoint
    if path is None:
        if not os.path.isfile(LATEST_CHECKPOINT):
            raise training.CheckpointError(
                f"no --checkpoint given and no latest run ({LATEST_CHECKPOINT}): train one "
                f"with needle train, or give --checkpoint PATH"
            )
        path = LATEST_CHECKPOINT

    def note(line: str) -> None:
        _print_note(line if args.checkpoint else f"{line} (the latest run: no --checkpoint given)")

    err, loss, n = training.evaluate_checkpoint(
        path, progress=sys.stderr.isatty(), log=note, **overrides
    )
    config = training.checkpoint_config(path)
    ppl = f" ppl {math.exp(loss):.2f}" if tasks.create(config).perplexity else ""
    print(f"test loss {loss:.4f} err {err:.4f}{ppl}  ({n} samples, {path})", flush=True)


def _generate_command(args: argparse.Namespace) -> None:
    """Run ``needle generate``: the text on stdout, a note on unknown words on stderr."""
    from needle.tasks import language

    result = language.generate(
        args.checkpoint, args.prompt, args.length, args.temperature, args.seed
    )
    if result.unknown:
        print(
            f"note: not in the model's vocabulary, read as <unk>: {' '.join(result.unknown)}",
            file=sys.stderr,
            flush=True,
        )
    print(result.text, flush=True)


def _print_line(line: str) -> None:
    print(line, flush=True)


def _print_note(line: str) -> None:
    """A line about what a command is doing, on stderr (stdout keeps the results)."""
    print(line, file=sys.stderr, flush=True)


def _explicit_options(argv: Sequence[str]) -> dict:
    """The options given on the command line (no defaults filled in)."""
    return vars(build_parser(with_defaults=False).parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``needle`` command (and of ``python -m needle``).

    Args:
        argv: the arguments after the program name (None: ``sys.argv[1:]``).

    Returns:
        the exit status: 0, or 2 after printing a one-line error to stderr. Bad options
        raise ``SystemExit(2)`` from argparse, as usual.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(model=_model_option(argv)).parse_args(argv)
    if args.command == "graph":
        return viz_command.run(args)
    explicit = _explicit_options(argv)
    try:
        status = _run_command(args, explicit)
    except BaseException:
        if _in_job():  # an unexpected error: show it, then end the job (see below)
            traceback.print_exc()
            sys.stderr.flush()
            distributed.abort(1)
        raise
    if status != 0 and _in_job():
        distributed.abort(status)  # the other ranks would wait for this one forever
    return status


def _model_option(argv: Sequence[str]) -> str | None:
    """The ``--model`` given in ``argv``, if it is a known one (it picks the defaults)."""
    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--model")
    model = peek.parse_known_args(argv)[0].model
    return model if model in tasks.model_names() else None


def _in_job() -> bool:
    """True in a distributed run of more than one process."""
    return distributed.is_initialized() and distributed.world_size() > 1


def _run_command(args: argparse.Namespace, explicit: dict) -> int:
    """Run the command; return the exit status (after a one-line error message)."""
    from needle.data import CIFAR10FormatError, CorpusFormatError, IDXFormatError

    try:
        # Subnormal floats flushed to zero: long runs would otherwise slow down several-fold
        # on CPUs that penalise them (see needle.backends.denormals); restored afterwards.
        with ndl.flush_denormals(True):
            if args.command == "train":
                if args.distributed or distributed.launched_by_mpi() > 1:
                    distributed.init()
                _train_command(args, explicit)
            elif args.command == "generate":
                _generate_command(args)
            else:
                _eval_command(args, explicit)
    except (
        training.TrainingError,
        IDXFormatError,
        CIFAR10FormatError,
        CorpusFormatError,
        OSError,
        distributed.DistributedError,
    ) as e:
        # OSError covers missing data (DatasetNotFoundError), failed downloads and an
        # unwritable --out; IDXFormatError, CIFAR10FormatError and CorpusFormatError a
        # damaged data file; DistributedError a lost rank.
        _report_error(args.command, str(e), getattr(e, "every_rank", False))
        return EXIT_USAGE if not isinstance(e, distributed.PeerLostError) else 1
    except MemoryError as e:  # NumPy refuses an allocation larger than the machine has
        _report_error(
            args.command,
            f"not enough memory for this run ({e}); smaller sizes "
            f"(--hidden-dim, --width, --embedding-dim, --num-layers, "
            f"--seq-len, --batch-size) need less",
        )
        return EXIT_USAGE
    except KeyboardInterrupt:
        hint = "; --resume continues from the last checkpoint" if args.command == "train" else ""
        print(f"\nneedle {args.command}: interrupted{hint}", file=sys.stderr)
        return 130
    return 0


def _report_error(command: str, message: str, every_rank: bool = False) -> None:
    """Print the error as one line; in a job, one that every rank raised alike only once.

    Such an error (``every_rank``: a resume refused by the same check on every rank) is
    printed by rank 0 alone; the barrier keeps the job alive until it is out (the abort
    that follows would otherwise cut it).
    """
    line = one_line(message)
    if _in_job() and every_rank:
        if distributed.rank() == 0:
            print(f"needle {command}: error: {line}", file=sys.stderr, flush=True)
        distributed.barrier()
        return
    print(f"needle {command}: error{_rank_note()}: {line}", file=sys.stderr, flush=True)


def one_line(message: str) -> str:
    r"""A message of several lines (a list of places, of problems) as one line.

    Example:
        >>> one_line("not found. Looked in:\n  - /a\n  - /b\nGet it with --download")
        'not found. Looked in: /a; /b; Get it with --download'
    """
    parts = [line.strip().removeprefix("- ") for line in message.splitlines() if line.strip()]
    text = parts[0] if parts else ""
    for part in parts[1:]:
        text += (" " if text.endswith(":") else "; ") + part
    return text


def _rank_note() -> str:
    """`` (rank R of N)`` in a job of several processes, else nothing."""
    if not _in_job():
        return ""
    return f" (rank {distributed.rank()} of {distributed.world_size()})"
