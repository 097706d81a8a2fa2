# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The scheduling math of fastsched, compiled: the hot path.

A twin of ``fastsched/_core_py.py``, which is the specification: same functions, same signatures, equal
return values, the same exceptions with the same messages (``tests/test_core.py`` checks it). Import the
functions from ``fastsched.core``, which picks one of the two.

How it is fast: counts live in C ``long long`` arrays, the scheduling loop of ``plan`` runs without the
GIL, and sequences are read without creating Python objects (the item array of a list or tuple, or a
typed memoryview for ``array('q')``, numpy ``int64`` and other buffers of 64-bit ints). Every count is
bounded by ``MAX_COUNT`` (2**53 - 1), so no intermediate value can overflow 64 bits.
"""
from cpython.dict cimport PyDict_CheckExact, PyDict_GetItemWithError
from cpython.float cimport PyFloat_CheckExact
from cpython.list cimport PyList_CheckExact, PyList_GET_SIZE, PyList_GetSlice, PyList_New
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_CheckExact, PyLong_FromDouble
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.ref cimport PyObject
from cpython.sequence cimport PySequence_Fast_GET_SIZE, PySequence_Fast_ITEMS
from cpython.tuple cimport PyTuple_CheckExact
from libc.math cimport INFINITY, ceil, pow, round

from collections.abc import Mapping as _Mapping
from operator import index as _index

PRIORITIES = (10, 20, 30, 40, 50)
BATCHED_UP_TO = 30
MAX_COUNT = 2**53 - 1
BUDGET_SLACK = 1e-9

cdef enum:
    _PRIORITY_COUNT = 5
cdef long long _C_MAX_COUNT = 9007199254740991  # 2**53 - 1
cdef double _LOAD_EXPONENT = 3.0
cdef double _BUDGET_SLACK = 1e-9
cdef int _BATCHED_RANKS = 3  # ranks 0..2 (priorities 10..30) take fetch_limit jobs per batch
cdef Py_ssize_t _GIL_FREE_FROM = 1000  # release the GIL for plans with at least this many slots


# --------------------------------------------------------------------------------------------- validation


cdef inline long long _count(object value, str name, Py_ssize_t index) except -1:
    """``value`` as a count in 0..MAX_COUNT; ``name`` (or ``name[index]`` when index >= 0) in the error."""
    cdef int overflow = 0
    cdef long long number
    if not PyLong_CheckExact(value):
        value = _index(value)
    number = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow != 0 or number < 0 or number > _C_MAX_COUNT:
        if index >= 0:
            name = f"{name}[{index}]"
        raise ValueError(f"{name} must be between 0 and {MAX_COUNT}, got {value}")
    return number


cdef object _as_fast(object values, str name):
    """A list or tuple holding the items of ``values`` (``values`` itself when it is one)."""
    if PyList_CheckExact(values) or PyTuple_CheckExact(values):
        return values
    try:
        iterator = iter(values)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of ints, got {type(values).__name__}") from None
    return list(iterator)


cdef int _count_vector(object values, str name, long long* out) except -1:
    """Read a per-priority vector (five counts by rank) into ``out``."""
    cdef Py_ssize_t rank, size
    cdef PyObject** items
    values = _as_fast(values, name)
    size = PySequence_Fast_GET_SIZE(values)
    if size != _PRIORITY_COUNT:
        raise ValueError(f"{name} must have {_PRIORITY_COUNT} entries (one per priority), got {size}")
    items = PySequence_Fast_ITEMS(values)
    for rank in range(_PRIORITY_COUNT):
        out[rank] = _count(<object>items[rank], name, rank)
    return 0


cdef double _real(object value, str name) except? -1.0:
    """``value`` (an int or a float) as a double, or TypeError naming ``name``."""
    if PyFloat_CheckExact(value):
        return <double>value
    if not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be an int or a float, got {type(value).__name__}")
    return <double>value


cdef inline int _rank_c(long long priority) noexcept nogil:
    """The rank of a priority, or -1 when it is not one of the five."""
    if 10 <= priority <= 50 and priority % 10 == 0:
        return <int>(priority // 10 - 1)
    return -1


cdef int _rank_of_object(object item, str name, Py_ssize_t index) except -1:
    """The rank of a priority given as a Python object; ValueError naming ``name`` (and ``index``)."""
    cdef int overflow = 0
    cdef long long number
    cdef int rank = -1
    if not PyLong_CheckExact(item):
        item = _index(item)
    number = PyLong_AsLongLongAndOverflow(item, &overflow)
    if overflow == 0:
        rank = _rank_c(number)
    if rank < 0:
        if index >= 0:
            name = f"{name}[{index}]"
        raise ValueError(f"{name} must be one of 10, 20, 30, 40, 50, got {item}")
    return rank


# The five priorities as the interpreter's cached small ints: a claimed row's priority is almost always
# one of these very objects, so comparing pointers finds its rank without converting it.
cdef object _P10 = 10, _P20 = 20, _P30 = 30, _P40 = 40, _P50 = 50


cdef inline int _rank_of_item(PyObject* item, Py_ssize_t index) except -1:
    """The rank of the priority at ``priorities[index]``; the error names the index."""
    cdef int overflow = 0
    cdef long long number
    cdef int rank
    if item == <PyObject*>_P10:
        return 0
    if item == <PyObject*>_P20:
        return 1
    if item == <PyObject*>_P30:
        return 2
    if item == <PyObject*>_P40:
        return 3
    if item == <PyObject*>_P50:
        return 4
    if PyLong_CheckExact(<object>item):
        number = PyLong_AsLongLongAndOverflow(<object>item, &overflow)
        if overflow == 0:
            rank = _rank_c(number)
            if rank >= 0:
                return rank
    return _rank_of_object(<object>item, "priorities", index)  # converts, or raises the error


cdef int _scan_items(object items, unsigned char* ranks, Py_ssize_t* counts) except -1:
    """Rank every priority of a list or tuple, in order, into ``ranks`` and/or ``counts`` (either NULL)."""
    cdef Py_ssize_t i, size = PySequence_Fast_GET_SIZE(items)
    cdef PyObject** item = PySequence_Fast_ITEMS(items)
    cdef int rank
    for i in range(size):
        rank = _rank_of_item(item[i], i)
        if ranks != NULL:
            ranks[i] = <unsigned char>rank
        if counts != NULL:
            counts[rank] += 1
    return 0


cdef int _scan_view(const long long[:] view, unsigned char* ranks, Py_ssize_t* counts) except -1:
    """Rank every priority of a buffer of 64-bit ints, in order, into ``ranks`` and/or ``counts``."""
    cdef Py_ssize_t i
    cdef int rank
    for i in range(view.shape[0]):
        rank = _rank_c(view[i])
        if rank < 0:
            raise ValueError(f"priorities[{i}] must be one of 10, 20, 30, 40, 50, got {view[i]}")
        if ranks != NULL:
            ranks[i] = <unsigned char>rank
        if counts != NULL:
            counts[rank] += 1
    return 0


cdef class _Priorities:
    """A sequence of priorities, ready to scan: a typed memoryview when it is a buffer of 64-bit ints
    (``array('q')``, numpy ``int64``), otherwise a list or tuple of its items."""
    cdef object items
    cdef const long long[:] view
    cdef bint use_view
    cdef Py_ssize_t size

    def __cinit__(self, object priorities):
        if not (PyList_CheckExact(priorities) or PyTuple_CheckExact(priorities)):
            try:
                iter(priorities)
            except TypeError:
                raise TypeError(
                    f"priorities must be a sequence of ints, got {type(priorities).__name__}"
                ) from None
            try:
                self.view = priorities
            except (TypeError, ValueError, BufferError):
                pass
            else:
                self.use_view = True
                self.size = self.view.shape[0]
                return
        self.items = _as_fast(priorities, "priorities")
        self.size = PySequence_Fast_GET_SIZE(self.items)

    cdef int scan(self, unsigned char* ranks, Py_ssize_t* counts) except -1:
        if self.use_view:
            return _scan_view(self.view, ranks, counts)
        return _scan_items(self.items, ranks, counts)


# ----------------------------------------------------------------------------------------------- rounding


def round_half_up(value):
    """Round half away from zero, like PHP's ``round()``: 2.5 → 3, 0.5 → 1, 1.49 → 1, -2.5 → -3."""
    cdef double number = _real(value, "value")
    return PyLong_FromDouble(round(number))


# ------------------------------------------------------------------------------------------------- limits


cdef inline long long _quadratic_limit(long long active, int n, int j) noexcept nogil:
    """The worker limit of the j-th (0-based, highest first) of n priorities in play."""
    cdef long long total = n * (n + 1) * (2 * n + 1) // 6
    cdef long long k = n - j
    cdef long long limit = (2 * active * k * k + total) // (2 * total)
    return limit if limit > 1 else 1


def quadratic_limits(active, n):
    """Friendica's quadratic fair share: the worker limit of each of ``n`` priorities in play."""
    cdef long long workers = _count(active, "active", -1)
    cdef int overflow = 0
    cdef long long count
    cdef int j
    n = _index(n)
    count = PyLong_AsLongLongAndOverflow(n, &overflow)
    if overflow != 0 or count < 0 or count > _PRIORITY_COUNT:
        raise ValueError(f"n must be between 0 and {_PRIORITY_COUNT}, got {n}")
    return [_quadratic_limit(workers, <int>count, j) for j in range(<int>count)]


# ------------------------------------------------------------------------------------------------- ranks


def rank_of(priority):
    """The rank of a priority: 10 → 0, 20 → 1, 30 → 2, 40 → 3, 50 → 4; ValueError for anything else."""
    return _rank_of_object(priority, "priority", -1)


# -------------------------------------------------------------------------------------------- scheduling


cdef int _choose(const long long* waiting, const long long* running, long long active) noexcept nogil:
    """choose_priority on C vectors; see the twin for the rules."""
    cdef int rank, j
    cdef int n = 0
    cdef int in_play[_PRIORITY_COUNT]
    cdef long long running_total = 0
    cdef long long workers
    if waiting[0] > 0:
        return 0
    for rank in range(_PRIORITY_COUNT):
        if waiting[rank] > 0 and running[rank] == 0:
            return rank
    for rank in range(_PRIORITY_COUNT):
        running_total += running[rank]
        if waiting[rank] > 0 or running[rank] > 0:
            in_play[n] = rank
            n += 1
    workers = active if active > running_total else running_total
    for j in range(n):
        rank = in_play[j]
        if waiting[rank] > 0 and running[rank] < _quadratic_limit(workers, n, j):
            return rank
    for rank in range(_PRIORITY_COUNT):
        if waiting[rank] > 0:
            return rank
    return -1


def choose_priority(waiting, running, active):
    """The rank of the priority the next free worker slot should serve, or -1 if nothing waits."""
    cdef long long waiting_counts[_PRIORITY_COUNT]
    cdef long long running_counts[_PRIORITY_COUNT]
    _count_vector(waiting, "waiting", waiting_counts)
    _count_vector(running, "running", running_counts)
    return _choose(waiting_counts, running_counts, _count(active, "active", -1))


cdef void _plan(long long* waiting, long long* running, long long active, long long slots,
                long long fetch_limit, long long* claim) noexcept nogil:
    cdef long long slot, take
    cdef int rank
    for slot in range(slots):
        rank = _choose(waiting, running, active)
        if rank < 0:
            break
        take = fetch_limit if rank < _BATCHED_RANKS else 1
        if take > waiting[rank]:
            take = waiting[rank]
        claim[rank] += take
        waiting[rank] -= take
        running[rank] += 1


def plan(waiting, running, active, free_slots, fetch_limit):
    """How many jobs of each priority to claim now, as a length-5 list by rank."""
    cdef long long waiting_left[_PRIORITY_COUNT]
    cdef long long running_now[_PRIORITY_COUNT]
    cdef long long claim[_PRIORITY_COUNT]
    cdef long long workers, slots, batch, waiting_total = 0
    cdef int rank
    _count_vector(waiting, "waiting", waiting_left)
    _count_vector(running, "running", running_now)
    workers = _count(active, "active", -1)
    free_slots = _index(free_slots)
    if free_slots < 0:
        raise ValueError(f"free_slots must be >= 0, got {free_slots}")
    fetch_limit = _index(fetch_limit)
    if fetch_limit < 1:
        raise ValueError(f"fetch_limit must be >= 1, got {fetch_limit}")
    for rank in range(_PRIORITY_COUNT):
        waiting_total += waiting_left[rank]
        claim[rank] = 0
    # Every slot takes at least one job, so more slots than waiting jobs change nothing; a batch larger
    # than a count is cut to it. Clamping keeps huge Python ints out of C.
    slots = waiting_total if free_slots > waiting_total else <long long>free_slots
    batch = _C_MAX_COUNT if fetch_limit > _C_MAX_COUNT else <long long>fetch_limit
    if slots >= _GIL_FREE_FROM:
        with nogil:
            _plan(waiting_left, running_now, workers, slots, batch, claim)
    else:
        _plan(waiting_left, running_now, workers, slots, batch, claim)
    return [claim[0], claim[1], claim[2], claim[3], claim[4]]


def plan_sized(waiting, running, active, free_slots, batch_sizes):
    """``plan`` with a batch size per priority (see the twin)."""
    cdef long long waiting_left[_PRIORITY_COUNT]
    cdef long long running_now[_PRIORITY_COUNT]
    cdef long long sizes[_PRIORITY_COUNT]
    cdef long long claim[_PRIORITY_COUNT]
    cdef long long workers, slots, slot, take, waiting_total = 0
    cdef int rank
    _count_vector(waiting, "waiting", waiting_left)
    _count_vector(running, "running", running_now)
    workers = _count(active, "active", -1)
    free_slots = _index(free_slots)
    if free_slots < 0:
        raise ValueError(f"free_slots must be >= 0, got {free_slots}")
    _count_vector(batch_sizes, "batch_sizes", sizes)
    for rank in range(_PRIORITY_COUNT):
        if sizes[rank] < 1:
            raise ValueError(f"batch_sizes[{rank}] must be >= 1, got {sizes[rank]}")
    for rank in range(_PRIORITY_COUNT):
        waiting_total += waiting_left[rank]
        claim[rank] = 0
    slots = waiting_total if free_slots > waiting_total else <long long>free_slots
    for slot in range(slots):
        rank = _choose(waiting_left, running_now, workers)
        if rank < 0:
            break
        take = sizes[rank]
        if take > waiting_left[rank]:
            take = waiting_left[rank]
        claim[rank] += take
        waiting_left[rank] -= take
        running_now[rank] += 1
    return [claim[0], claim[1], claim[2], claim[3], claim[4]]


# -------------------------------------------------------------------------------------------- claimed rows


cdef extern from *:
    """
    #define __pyx_fs_prefetch_w(p) __builtin_prefetch((const void*)(p), 1, 3)
    """
    void _prefetch_w "__pyx_fs_prefetch_w"(const void* p) noexcept nogil


cdef extern from "Python.h":
    PyObject* _list_new "PyList_New"(Py_ssize_t size) except NULL
    void _list_set_item "PyList_SET_ITEM"(PyObject* items, Py_ssize_t index, PyObject* item) noexcept
    void _incref "Py_INCREF"(PyObject* item) noexcept
    bint _is_exact_int "PyLong_CheckExact"(PyObject* item) noexcept


# How many ids ahead of the one being added to a batch to prefetch: claimed ids are ints that may lie
# anywhere in memory, and touching each one (type check, reference count) is most of the work.
cdef enum:
    _PREFETCH_AHEAD = 16


cdef inline Py_ssize_t _batch_end(const unsigned char* ranks, Py_ssize_t start, Py_ssize_t size,
                                  Py_ssize_t batch) noexcept nogil:
    """Where the batch starting at ``start`` ends: the rank changes or the batch is full."""
    cdef unsigned char rank = ranks[start]
    cdef Py_ssize_t capacity = batch if rank < _BATCHED_RANKS else 1
    cdef Py_ssize_t limit = start + capacity
    cdef Py_ssize_t end = start + 1
    if limit > size:
        limit = size
    while end < limit and ranks[end] == rank:
        end += 1
    return end


cdef object _batches_of_exact(PyObject** items, const unsigned char* ranks, Py_ssize_t size,
                              Py_ssize_t batch):
    """The batches as new lists holding the very id objects of ``items``, or None as soon as one id is
    not an exact int (nothing else happens then: the caller converts the ids and starts again)."""
    cdef Py_ssize_t count = 0, start = 0, end, k = 0, i
    cdef PyObject* inner
    cdef PyObject* item
    cdef list batches
    while start < size:
        start = _batch_end(ranks, start, size, batch)
        count += 1
    batches = PyList_New(count)  # NULL slots until filled: a list dropped half-built frees cleanly
    start = 0
    while start < size:
        end = _batch_end(ranks, start, size, batch)
        inner = _list_new(end - start)
        _list_set_item(<PyObject*>batches, k, inner)  # steals the new reference
        k += 1
        for i in range(start, end):
            if i + _PREFETCH_AHEAD < size:
                _prefetch_w(items[i + _PREFETCH_AHEAD])
            item = items[i]
            if not _is_exact_int(item):
                return None
            _incref(item)
            _list_set_item(inner, i - start, item)
        start = end
    return batches


def batch_ids(ids, priorities, fetch_limit):
    """Split claimed job ids into the batches handed to children (see the twin for the rules)."""
    cdef object id_items = _as_fast(ids, "ids")
    cdef _Priorities source = _Priorities(priorities)
    cdef Py_ssize_t size, start, end, batch
    cdef unsigned char* ranks
    cdef list job_ids, batches
    fetch_limit = _index(fetch_limit)
    if fetch_limit < 1:
        raise ValueError(f"fetch_limit must be >= 1, got {fetch_limit}")
    size = PySequence_Fast_GET_SIZE(id_items)
    if size != source.size:
        raise ValueError(
            f"ids and priorities must have the same length, got {size} ids and {source.size} priorities"
        )
    batch = size if fetch_limit > size else <Py_ssize_t>fetch_limit
    ranks = <unsigned char*>PyMem_Malloc(size if size > 0 else 1)
    if ranks == NULL:
        raise MemoryError()
    try:
        source.scan(ranks, NULL)  # every priority checked before any id, as the twin does

        # The common case: every id is an exact int, and the batches hold those very objects.
        result = _batches_of_exact(PySequence_Fast_ITEMS(id_items), ranks, size, batch)
        if result is not None:
            return result

        # Some id is not an exact int: convert them all (the first one that is not int-like raises),
        # then the batches are slices of the converted list.
        job_ids = [_index(item) for item in id_items]
        batches = []
        start = 0
        while start < size:
            end = _batch_end(ranks, start, size, batch)
            batches.append(PyList_GetSlice(job_ids, start, end))
            start = end
        return batches
    finally:
        PyMem_Free(ranks)


cdef inline double _estimate(object estimates, bint exact, object command, bint* known) except? -1.0:
    """The estimate of ``command`` (``known`` says whether there is one), validated as the twin does."""
    cdef PyObject* found
    cdef double cost
    if exact:
        found = PyDict_GetItemWithError(estimates, command)
        if found == NULL:
            known[0] = False
            return 0.0
        value = <object>found
        if value is None:  # as the twin's estimates.get(command)
            known[0] = False
            return 0.0
    else:
        value = estimates.get(command)
        if value is None:
            known[0] = False
            return 0.0
    known[0] = True
    if PyFloat_CheckExact(value):
        cost = <double>value
    else:
        cost = _real(value, f"estimates[{command!r}]")
    if not cost >= 0.0:
        raise ValueError(f"estimates[{command!r}] must be a number of seconds >= 0, got {cost!r}")
    return cost


def time_batches(commands, estimates, budget, cap, slots):
    """Cut claimed jobs of one priority into at most ``slots`` batches that fit a time budget; their
    lengths (see the twin for the rules)."""
    cdef object items = _as_fast(commands, "commands")
    cdef PyObject** entries
    cdef Py_ssize_t size, i, jobs = 0, batch_cap, batch_slots
    cdef double limit, total = 0.0, cost
    cdef bint exact, known, open_batch = False
    cdef list lengths = []
    if not isinstance(estimates, _Mapping):
        raise TypeError(f"estimates must be a mapping of command to seconds, got {type(estimates).__name__}")
    limit = _real(budget, "budget")
    if not limit >= 0.0:
        raise ValueError(f"budget must be a number of seconds >= 0, got {budget!r}")
    limit += limit * _BUDGET_SLACK
    cap = _index(cap)
    if cap < 1:
        raise ValueError(f"cap must be >= 1, got {cap}")
    slots = _index(slots)
    if slots < 0:
        raise ValueError(f"slots must be >= 0, got {slots}")
    if slots == 0:
        return lengths
    size = PySequence_Fast_GET_SIZE(items)
    entries = PySequence_Fast_ITEMS(items)
    batch_cap = size + 1 if cap > size else <Py_ssize_t>cap
    batch_slots = size + 1 if slots > size else <Py_ssize_t>slots
    exact = PyDict_CheckExact(estimates)
    for i in range(size):
        cost = _estimate(estimates, exact, <object>entries[i], &known)
        if open_batch and known and jobs < batch_cap and total + cost <= limit:
            jobs += 1
            total += cost
            continue
        if jobs:
            lengths.append(jobs)
            if PyList_GET_SIZE(lengths) == batch_slots:
                return lengths
        jobs = 1
        total = cost
        open_batch = known and cost <= limit
    if jobs:
        lengths.append(jobs)
    return lengths


# ---------------------------------------------------------------------------------------- load governor


def allowed_workers(workers, load, max_load, waiting):
    """How many of ``workers`` may run at system load ``load``: Friendica's load governor, fixed."""
    cdef long long count = _count(workers, "workers", -1)
    cdef double current = _real(load, "load")
    cdef double maximum = _real(max_load, "max_load")
    cdef bint has_waiting = waiting
    cdef double headroom, slope
    cdef long long allowed
    if not (0.0 < maximum < INFINITY) or not current > 0.0:
        return count
    headroom = maximum - current
    if not headroom > 0.0:
        headroom = 0.0
    slope = pow(headroom / maximum, _LOAD_EXPONENT)
    allowed = <long long>ceil(slope * <double>count)
    if has_waiting and allowed < 1:
        allowed = 1
    return allowed if allowed < count else count
