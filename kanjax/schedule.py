"""Grid schedules (grid extension): train, refine every layer to a finer grid, train on.

The stages' shapes are known up front, so every later stage's epoch program compiles in
background threads (:class:`CompileAhead`) while the earlier stages refine and run.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time

from flax import nnx

from kanjax.compiling import program_result
from kanjax.fit import fit, grid_inputs
from kanjax.history import History
from kanjax.nn import refined_like, warm_refine
from kanjax.train_config import TrainConfig

__all__ = ["CompileAhead", "run_schedule"]


class CompileAhead:
    """Compiles every grid-schedule stage's programs in background threads.

    A stand-in with each stage's structure (zero arrays of the refined shapes,
    :func:`kanjax.nn.refined_like`) has its epoch program compiled with ``compile_only``,
    and the forward pass that the refine into it needs, while the earlier stages refine
    and run on the main thread. XLA compiles without holding the GIL, so the threads
    overlap. A stage whose model turns out different (or whose compile fails) is compiled
    as usual.
    """

    def __init__(self, model, data, config: TrainConfig, validation_data=None):
        self._pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="kanjax-compile")
        # The tasks wait until the first stage's program is traced: tracing is Python and
        # holds the GIL, so it goes fastest alone, and XLA's compile of it then overlaps
        # with the tracing of the next programs.
        self._go = threading.Event()
        uniform = config.grid_eps == 1.0  # refined knots are uniform only then
        stages = config.grid_schedule
        stand_ins = [nnx.merge(*nnx.split(model))]  # new modules sharing the arrays
        stand_ins += [refined_like(model, g, uniform) for g, _ in stages]
        x = grid_inputs(data)

        def compile_stage(i, epochs):
            self._go.wait()
            return fit(stand_ins[i], data, config.stage(epochs), validation_data=validation_data,
                       compile_only=True)

        def warm(i, grid_size):
            self._go.wait()
            warm_refine(stand_ins[i], x, grid_size)

        # two workers take the tasks in the order the stages need them: each refine's forward
        # pass (stage i's structure), then the epoch program of stage i + 1
        self.refits, self.programs = [], []
        for i, (grid_size, epochs) in enumerate(stages):
            self.refits.append(self._pool.submit(warm, i, grid_size))
            self.programs.append(self._pool.submit(compile_stage, i + 1, epochs))

    def start(self):
        self._go.set()

    def close(self):
        self._go.set()
        self._pool.shutdown(wait=False, cancel_futures=True)


def run_schedule(model, data, config: TrainConfig, history: History, ahead: CompileAhead,
                 start: float, validation_data=None) -> History:
    """The grid schedule's stages after the first: refine, train, extend ``history``."""

    def since_start(times):  # a stage's epoch times, shifted to seconds since train() began
        shift = time.perf_counter() - start - (times[-1] if times else 0.0)
        return [shift + t for t in times]

    history.wall_time = since_start(history.wall_time)
    history.config["grid_stages"] = [(0, model.layers[0].grid_size)]
    history.config["stage_compile_time"] = [history.config["compile_time"]]
    history.config["stage_compiled_ahead"] = []
    x = grid_inputs(data)
    for i, (grid_size, stage_epochs) in enumerate(config.grid_schedule):
        first = history.epochs
        program_result(ahead.refits[i])  # wait: its forward pass compiles ahead
        model.refine(grid_size, x, grid_eps=config.grid_eps, margin=config.grid_margin)
        _, (stage,) = fit(model, data, config.stage(stage_epochs), validation_data=validation_data,
                          program=ahead.programs[i])
        stage.wall_time = since_start(stage.wall_time)
        history.extend(stage)
        history.config["grid_stages"].append((first, grid_size))
        history.config["stage_compile_time"].append(stage.config["compile_time"])
        history.config["stage_compiled_ahead"].append(stage.config["compiled_ahead"])
        for key in ("stopped_at_epoch", "converged"):
            if key in stage.config:
                history.config.setdefault("stage_" + key, []).append((grid_size, stage.config[key]))
    return history
