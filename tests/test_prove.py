"""`smartquant prove` (sim/formal.py, sim/formal_harness.py): every property of the leaf
components holds on the default configuration, each is caught when the design is broken
on purpose (mutants patched in, one at a time), and bad input is a one-line error.
Budget: ~3 s per property run (sby + boolector from YoWASP)."""

import contextlib
import dataclasses
import inspect
import json
import sys
import types
from pathlib import Path
from unittest import mock

import pytest
from amaranth import Module, Signal
from amaranth.lib.fifo import SyncFIFOBuffered

from smartquant import cli
from smartquant.hw import (blockcache, blocktags, counter, csr, decode, dram, fetch, lanes, output, queue, respond,
                           sequencer)
from smartquant.sim import formal, formal_cache
from smartquant.sim.formal_harness import PROPERTIES, FormalProperty


def test_every_property_holds_and_every_cover_is_reached(tmp_path, capsys):
    out = tmp_path / "prove.json"
    code = cli.main(["prove", "--json", str(out), "--workdir", str(tmp_path / "formal")])
    table = capsys.readouterr().out
    results = {r["name"]: r for r in json.loads(out.read_text())["properties"]}
    assert set(results) == set(PROPERTIES)
    for name, prop in PROPERTIES.items():
        expected = "reached" if prop.kind == "cover" else "proven"
        assert results[name]["status"] == expected, results[name]
        assert name in table
    assert code == 0
    assert "k-induction" in results["held_below_step"]["detail"]
    trace = results["queue_cover"]["trace"]
    assert trace.endswith(".vcd") and (tmp_path / "formal").is_dir() and open(trace).read(1)


def _dropping_down(m, count, limit, up, down, *, name):
    """held_below without its falling case: the flag never rises again."""
    flag = Signal(init=count.init < limit, name=name)
    with m.If(up & ~down):
        m.d.sync += flag.eq(count < limit - 1)
    return flag


class _MutantHead(SyncFIFOBuffered):
    """A SyncFIFOBuffered with one fault when it is BlockRamQueue's head (`HEAD_DEPTH`
    entries): "flicker" drops `r_rdy` every other cycle with no read, "overfill" takes
    writes while full (the entry is lost)."""

    fault = None

    def elaborate(self, platform):
        m = Module()
        m.submodules.real = real = SyncFIFOBuffered(width=self.width, depth=self.depth)
        faulty = self.depth == queue.BlockRamQueue.HEAD_DEPTH
        toggle = Signal()
        m.d.sync += toggle.eq(~toggle)
        m.d.comb += [real.w_en.eq(self.w_en), real.w_data.eq(self.w_data), real.r_en.eq(self.r_en),
                     self.r_data.eq(real.r_data), self.level.eq(real.level),
                     self.w_rdy.eq(real.w_rdy | (faulty & (self.fault == "overfill"))),
                     self.r_rdy.eq(real.r_rdy & ~(faulty & (self.fault == "flicker") & toggle))]
        return m


@pytest.mark.parametrize("fault,target,caught_by", [
    ("held_below drops its falling case", (counter, "held_below", _dropping_down), "held_below_step"),
    ("held_below drops its falling case", (queue, "held_below", _dropping_down), "queue_ready_flags"),
    ("head's r_rdy falls without r_en", "flicker", "queue_stream_rules"),
    ("head's r_rdy falls without r_en", "flicker", "queue_progress"),
    ("head loses an entry when full", "overfill", "queue_occupancy"),
    ("head loses an entry when full", "overfill", "queue_order"),
])
def test_a_broken_design_fails_its_property(fault, target, caught_by, monkeypatch):
    if isinstance(target, tuple):
        monkeypatch.setattr(*target)
    else:
        monkeypatch.setattr(_MutantHead, "fault", target)
        monkeypatch.setattr(queue, "SyncFIFOBuffered", _MutantHead)
    [result] = formal.prove(formal.select([caught_by]))
    assert result.status == "failed", (fault, result)
    assert "formal_harness.py:" in result.detail and "Assert" in result.detail


def test_the_unbroken_mutant_wrapper_passes(monkeypatch):
    """The wrapper alone (no fault) keeps the properties: the failures above are the faults'."""
    monkeypatch.setattr(queue, "SyncFIFOBuffered", _MutantHead)
    [result] = formal.prove(formal.select(["queue_stream_rules"]))
    assert result.status == "proven", result


def _mutant(module: types.ModuleType, old: str, new: str) -> types.ModuleType:
    """A copy of `module` with the one occurrence of `old` in its source replaced by `new`."""
    source = inspect.getsource(module)
    assert source.count(old) == 1, f"{old!r} is not in {module.__name__} exactly once"
    copy = types.ModuleType(module.__name__)
    copy.__package__, copy.__file__ = module.__package__, module.__file__
    exec(compile(source.replace(old, new), module.__file__, "exec"), copy.__dict__)
    return copy


#: (fault, module, source text, broken text, the property that must fail); the copy
#: replaces the module where the property's harness module reads it, and the classes
#: `Responder` builds its parts from
SOURCE_MUTANTS = [
    ("the lookup forgets the allocation of the command just ahead", blocktags,
     "hit.eq((pend_fill & ahead_serves & ahead_deep)", "hit.eq((pend_fill & ahead_serves & 0)", "tags_model"),
    ("the lookup forgets the drop by the command just ahead", blocktags,
     "ahead_dropped.eq(ahead_eq & pend_clears)", "ahead_dropped.eq(0)", "tags_model"),
    ("the table compare ignores the table load just ahead", blocktags,
     "ahead_loads_table, (l1.cmd.codebook", "0, (l1.cmd.codebook", "tags_model"),
    ("a hit may land on the slot the table load takes", blocktags,
     "(near[0] & (pend_table | pend_fill | loads_table))", "(near[0] & (pend_table | pend_fill))", "tags_model"),
    ("a quantized miss leaves the block's shallower copy resident", blocktags,
     "Mux(pend_qmiss, pend_same, 0)", "0", "tags_model"),
    ("the metadata lookup forgets the allocation of the command just ahead", blocktags,
     "(m_ahead & ahead_meta_eq.replicate(M))", "(m_ahead & 0)", "tags_model"),
    ("the metadata lookup forgets the allocation of the command two ahead", blocktags,
     "(m_two_ahead & two_ahead_meta_eq.replicate(M))", "0", "tags_model"),
    ("a raw write leaves its metadata line resident", blocktags,
     "(m_valid & ~Mux(pend_write, l2_m_match, 0))", "m_valid", "tags_model"),
    ("a metadata fill decided as the cache is invalidated stays resident", blocktags,
     "live & fetch_meta & ~self.invalidate", "live & fetch_meta", "tags_model"),
    ("a slot acquired in the cycle it is judged is offered for refill", blockcache,
     "& ~(acquired & (acquired_slot == slot))", "", "cache_references"),
    ("a slot whose acquire awaits its count is offered for refill", blockcache,
     "& ~(uncounted & (uncounted_slot == slot))", "", "cache_references"),
    ("the register of the slot after the pointer stays put", blockcache,
     "following.eq(_next(following, slots))", "following.eq(following)", "cache_references"),
    ("the landed flag waits a cycle more after a burst's last beat", blockcache,
     "Mux(start, fills != started, fills_plus_one != started)", "Mux(start, fills != started, fills != started)",
     "cache_landed"),
    ("any allocation clears every slot's failed flag", blockcache,
     "with m.If(alloc & (pointer == s)):", "with m.If(alloc):", "cache_failed_flags"),
    ("a command skips the FIFO while entries wait in it", queue,
     "skip = (fifo.level == 0) & head.input.ready", "skip = head.input.ready", "bypass_order"),
    ("every command passes through the FIFO (3 cycles instead of 1)", queue,
     "skip = (fifo.level == 0) & head.input.ready", "skip = (fifo.level == 0) & head.input.ready & 0",
     "bypass_progress"),
    ("a k above 8 passes as a valid k", decode,
     "((k == 0) | (k > PLANES))", "(k == 0)", "decode_causes"),
    ("a region holds the block just past its end", decode,
     "(block >= near[i].first) & (block < end)", "(block >= near[i].first) & (block <= end)", "decode_isolation"),
    ("the table read ignores its region's codebook base", fetch,
     "Mux(need_table, (c.codebook * CODEBOOK_LINES) + table_first,", "Mux(need_table, table_first,",
     "fetch_isolation"),
    ("a write's job offered before its write is taken", fetch,
     "write_ok = ~is_write | write_pending | write_done", "write_ok = ~is_write | write_pending | self.writes.valid",
     "issue_one_job_per_command"),
    ("a write issued again while its job waits", fetch,
     "write_pending.eq(write_pending | write_done)", "write_pending.eq(write_pending)", "issue_one_job_per_command"),
    ("a command taken with its table load (its own job dropped)", fetch,
     "self.cmd.ready.eq(fire)", "self.cmd.ready.eq(fire | load_table)", "issue_one_job_per_command"),
    ("a metadata request replaces a plane request waiting on AR", dram,
     "pick_meta.eq(mq.r_rdy & ~plane_waiting)", "pick_meta.eq(mq.r_rdy)", "fetch_axi_rules"),
    ("a raw read fetches k lines (bursts cross 4 KB)", fetch,
     "Mux(quantized, c.k, 1)", "c.k", "fetch_axi_rules"),
    ("a metadata burst also pops the plane request queue (a plane request lost)", dram,
     "pq.r_en.eq(ar_done & ~pick_meta)", "pq.r_en.eq(ar_done)", "dram_request_to_burst"),
    ("a plane request reaches AR a cycle late (its queue's output registered)", dram,
     "pq = SyncFIFO(width", "pq = SyncFIFOBuffered(width", "issue_progress"),
    ("AR offered without room in the landing queue", dram,
     "axi.arvalid.eq((pq.r_rdy | mq.r_rdy) & landing.w_rdy)", "axi.arvalid.eq(pq.r_rdy | mq.r_rdy)", "dram_outstanding"),
    ("the router dequeues a line only when a DRS is taken (an NDR repeats)", output,
     "self.lines.ready.eq(drs_done | ndr_done)", "self.lines.ready.eq(drs_done)", "router_order"),
    ("the line packer writes a line for every step (an fp16 / bf16 line twice)", output,
     "self.line.valid.eq(self.input.valid & meta.last)", "self.line.valid.eq(self.input.valid)",
     "respond_one_line_per_job"),
    ("the sequencer takes a job at every step (an fp16 / bf16 job after its first)", sequencer,
     "self.job.ready.eq(go & last)", "self.job.ready.eq(go)", "respond_one_line_per_job"),
    ("the sequencer waits for room for two lines (a job with room for its own waits for the credit)", sequencer,
     "room.eq(held + 1 < self.queue_depth)", "room.eq(held + 2 < self.queue_depth)", "respond_progress"),
    ("the sequencer starts a line not dequantized at once behind an fp16 one (lines overtake in the lanes)", sequencer,
     "go = self.job.valid & ready & room & in_order", "go = self.job.valid & ready & room", "respond_one_line_per_job"),
    ("the sequencer waits for the lanes to empty before every step", sequencer,
     "ok.eq(ahead_next <= d)", "ok.eq(ahead_next == 0)", "respond_progress"),
    ("a table lookup's line leaves with an affine step's side-band data", lanes,
     "Mux(lookup.result_valid, lookup_meta.output, affine_meta.output)", "affine_meta.output", "respond_one_line_per_job"),
    ("a poisoned DRS line is never offered (its read never answered)", output,
     "self.drs.valid.eq(self.lines.valid & ~head.ndr)", "self.drs.valid.eq(self.lines.valid & ~head.ndr & ~head.poison)",
     "router_progress"),
    ("the router offers DRS and NDR for every line", output,
     "self.drs.valid.eq(self.lines.valid & ~head.ndr)", "self.drs.valid.eq(self.lines.valid)", "router_stream_rules"),
    ("every register write clears the counters", csr,
     "clear = bus.w_en & (bus.addr == CSR_COUNTER_CLEAR)", "clear = bus.w_en", "csr_counters"),
    ("a decoder's and a DRAM error of one cause in one cycle count once", csr,
     "+ (ev.dram_error.valid", "| (ev.dram_error.valid", "csr_counters"),
]


def _broken(number: int, module: types.ModuleType, old: str, new: str, caught_by: str) -> FormalProperty:
    """Property `caught_by`, renamed, whose harness is built with the mutant copy of `module`
    in place of the module (patched only while the harness is built)."""
    prop = PROPERTIES[caught_by]
    harness = sys.modules[prop.builder.__module__]
    copy = _mutant(module, old, new)

    imported = [name for name, value in vars(respond).items()
                if isinstance(value, type) and value.__module__ == module.__name__]

    def build(h, m):
        with contextlib.ExitStack() as patches:
            if hasattr(harness, short := module.__name__.rsplit(".", 1)[1]):
                patches.enter_context(mock.patch.object(harness, short, copy))
            for name in imported:
                patches.enter_context(mock.patch.object(respond, name, getattr(copy, name)))
            prop.builder(h, m)
    return dataclasses.replace(prop, name=f"{caught_by}_mutant{number}", builder=build)


@pytest.mark.slow          # about 2-4 minutes; CI runs it in its slow step
def test_each_broken_datapath_component_fails_its_property():
    """One run of every source mutant (two sby runs at a time), each failing its property
    at an assertion of that property's harness."""
    broken = [_broken(n, module, old, new, caught_by) for n, (_, module, old, new, caught_by) in enumerate(SOURCE_MUTANTS)]
    results = formal.prove(broken, jobs=2)
    for (fault, *_, caught_by), result in zip(SOURCE_MUTANTS, results):
        harness_file = Path(sys.modules[PROPERTIES[caught_by].builder.__module__].__file__).name
        assert result.status == "failed", (fault, result)
        assert f"{harness_file}:" in result.detail and "Assert" in result.detail, (fault, result)


def test_an_unchanged_source_copy_passes(monkeypatch):
    """The copying alone keeps the properties: the failures above are the faults'."""
    monkeypatch.setattr(formal_cache, "blockcache", _mutant(blockcache, "FILL_COUNT_BITS = 9", "FILL_COUNT_BITS = 9"))
    [result] = formal.prove(formal.select(["cache_references"]))
    assert result.status == "proven", result


@pytest.mark.parametrize("argv,message", [
    (["prove", "no_such_property"], "unknown property 'no_such_property'"),
    (["prove", "held_below_step", "--jobs", "0"], "--jobs must be at least 1, not 0"),
    (["prove", "--json", "."], "is a directory"),
])
def test_bad_input_is_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("smartquant prove: error:")


def test_workdir_refuses_a_foreign_directory(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("user data")
    assert cli.main(["prove", "held_below_step", "--workdir", str(tmp_path)]) == 2
    assert (tmp_path / "mine.txt").read_text() == "user data"
    assert "not a smartquant formal work directory" in capsys.readouterr().err
