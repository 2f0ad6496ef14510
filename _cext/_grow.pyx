"""One compiled step per split of the grower's leaf-wise loop.

:class:`NodeKernels` holds what every node of one tree shares (the binned
matrix, its row-major copy, gradients, the partition and its buffers, the
split-search settings), so that splitting a node is one call and one
release of the GIL: partition its rows, fill the smaller child's histogram,
subtract it from the parent's for the larger one, and search both children's
best splits, with no allocation and no Python in between. A split is one
parallel region whose phases are separated by a barrier of our own, or, with
:meth:`NodeKernels.run_in_team`, a tree's threads stay in one region and take
each split as it comes. The filling and the search are the code of
``_histogram.pyx`` and ``_splitting.pyx`` (the same includes), so a tree is
the one the per-kernel calls grow; none of it depends on the number of
threads.
"""
from cython.parallel import parallel, prange
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy
from libc.math cimport INFINITY
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

import numpy as np

include "_hist_fill.pxi"
include "_split_scan.pxi"
include "_entry_bins.pxi"

from ._histogram import check_offsets, padded_offsets, sparse_parts

# A node holding fewer than 1/_row_major_below of the rows has its histogram
# filled from the row-major copy: its rows are scattered, and a row's bins
# then come in one cache line instead of one per feature (measured on one
# thread: the column-major loop wins above about 1/14). Column-major blocks
# have _column_block features. Neither changes a sum (benchmarks tune them
# through set_layout).
cdef Py_ssize_t _row_major_below = 16
cdef Py_ssize_t _column_block = TILE
cdef bint _tree_teams = True


def set_layout(Py_ssize_t row_major_below=16, Py_ssize_t column_block=TILE,
               bint tree_teams=True):
    """Tune the histogram layouts and threading (a benchmark knob; trees do
    not change): nodes under ``1/row_major_below`` of the rows read the
    row-major copy (0: never), column-major tasks fill ``column_block``
    features (1 to 64), and ``tree_teams`` keeps a tree's threads in one
    parallel region (else: one region per split)."""
    global _row_major_below, _column_block, _tree_teams
    if row_major_below < 0 or not 1 <= column_block <= MAX_BLOCK:
        raise ValueError(f"row_major_below must be >= 0 and column_block in 1..{MAX_BLOCK}")
    _row_major_below = row_major_below
    _column_block = column_block
    _tree_teams = tree_teams


cdef enum:
    # Roughly, inner-loop steps worth a thread (as dartboost._common's
    # MIN_WORK_PER_THREAD): small steps run on fewer threads.
    MIN_WORK_PER_THREAD = 50000
    # Histogram bins (of subtraction and search, ~5 ns each) worth a thread
    # in the per-feature phase (its threads are the split's team, already
    # running: only the barrier's cost is at stake).
    MIN_BINS_PER_THREAD = 4096
    # Rows of a partition worth a thread (some 10 us of work).
    PARTITION_ROWS_PER_THREAD = 4096


# Seconds spent in each phase since the last reset (benchmarks/profile_fit.py
# reads them: one compiled call per split hides its phases from cProfile).
# Updated by the calling thread only, outside the parallel regions.
DEF N_PHASES = 4
cdef double _phase_seconds[N_PHASES]
PHASES = ("partition", "histogram", "subtract_and_search", "root")


cdef inline double _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + 1e-9 * ts.tv_nsec


def phase_seconds(bint reset=False):
    """``{phase: seconds}`` spent by the split steps of this process (see
    :data:`PHASES`); ``reset`` zeroes the counters after reading them."""
    out = {name: _phase_seconds[i] for i, name in enumerate(PHASES)}
    if reset:
        for i in range(N_PHASES):
            _phase_seconds[i] = 0.
    return out


cdef inline int _threads(Py_ssize_t work, Py_ssize_t per_thread, int n_threads) noexcept nogil:
    cdef Py_ssize_t t = work // per_thread
    if t > n_threads:
        t = n_threads
    return <int>t if t > 1 else 1


cdef extern from *:
    """
    /* One parallel region per tree (or per split): the phases of a split
       are separated by a barrier of our own, and the team waits between
       splits at a gate of our own, instead of libgomp's barriers, which with
       the passive wait policy dartboost loads (see _cext/__init__.py) put
       every waiting thread to sleep in the kernel at once and wake it with
       a system call: several times per split, for thousands of splits. */
    #ifdef _OPENMP
    #include <omp.h>
    static int db_team_size(void) { return omp_get_num_threads(); }
    static int db_thread_id(void) { return omp_get_thread_num(); }
    #else
    static int db_team_size(void) { return 1; }
    static int db_thread_id(void) { return 0; }
    #endif
    /* A gate: waiters wait for its generation to change. They spin a few
       microseconds (a split's phases, and the Python between a tree's
       splits, are that short on a quiet machine), yield a few times, then
       sleep in the kernel (futex) so that a loaded machine loses no CPU to
       them; opening the gate wakes sleepers only if there are any. */
    typedef struct { int generation; int sleepers; } db_gate_t;
    typedef struct { int count; db_gate_t gate; } db_barrier_t;
    #if defined(__GNUC__) || defined(__clang__)
    #include <sched.h>
    #include <limits.h>
    #if defined(__x86_64__) || defined(__i386__)
    #define DB_PAUSE() __builtin_ia32_pause()
    #elif defined(__aarch64__)
    #define DB_PAUSE() __asm__ __volatile__("yield")
    #else
    #define DB_PAUSE() ((void)0)
    #endif
    #ifdef __linux__
    #include <linux/futex.h>
    #include <sys/syscall.h>
    #include <unistd.h>
    #define DB_SLEEP(addr, val) syscall(SYS_futex, (addr), FUTEX_WAIT_PRIVATE, (val), NULL, NULL, 0)
    #define DB_WAKE(addr) syscall(SYS_futex, (addr), FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0)
    #else
    #define DB_SLEEP(addr, val) sched_yield()
    #define DB_WAKE(addr) ((void)0)
    #endif
    #include <time.h>
    /* spin this long before yielding, then sleeping: covers a split's phases
       and the Python between two splits of a tree on a quiet machine */
    #define DB_SPIN_NS 50000
    #define DB_YIELDS 4
    static long long db_now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    }
    static int db_gate_wait(db_gate_t* g, int seen) {
        int i, now;
        long long until = 0;
        for (i = 0;; i++) {
            now = __atomic_load_n(&g->generation, __ATOMIC_ACQUIRE);
            if (now != seen) return now;
            DB_PAUSE();
            if ((i & 31) == 31) {
                long long t = db_now_ns();
                if (until == 0) until = t + DB_SPIN_NS;
                else if (t > until) break;
            }
        }
        for (i = 0; i < DB_YIELDS; i++) {
            sched_yield();
            now = __atomic_load_n(&g->generation, __ATOMIC_ACQUIRE);
            if (now != seen) return now;
        }
        for (;;) {
            __atomic_add_fetch(&g->sleepers, 1, __ATOMIC_SEQ_CST);
            if (__atomic_load_n(&g->generation, __ATOMIC_SEQ_CST) == seen)
                DB_SLEEP(&g->generation, seen);
            __atomic_sub_fetch(&g->sleepers, 1, __ATOMIC_SEQ_CST);
            now = __atomic_load_n(&g->generation, __ATOMIC_ACQUIRE);
            if (now != seen) return now;
        }
    }
    static void db_gate_open(db_gate_t* g) {
        __atomic_add_fetch(&g->generation, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&g->sleepers, __ATOMIC_SEQ_CST) > 0) DB_WAKE(&g->generation);
    }
    static void db_barrier_wait(db_barrier_t* b, int n) {
        int gen;
        if (n <= 1) return;
        gen = __atomic_load_n(&b->gate.generation, __ATOMIC_ACQUIRE);
        if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == n) {
            __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
            db_gate_open(&b->gate);
            return;
        }
        db_gate_wait(&b->gate, gen);
    }
    static Py_ssize_t db_next_task(Py_ssize_t* counter) {
        return __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
    }
    #define DB_HAS_TEAM 1
    #else
    /* other compilers: OpenMP's own barrier and atomic (an orphaned barrier
       binds to the enclosing parallel region) */
    static void db_barrier_wait(db_barrier_t* b, int n) {
        (void)b;
        if (n > 1) {
            __pragma(omp barrier)
        }
    }
    static Py_ssize_t db_next_task(Py_ssize_t* counter) {
        Py_ssize_t got;
        __pragma(omp critical(dartboost_next_task))
        { got = *counter; *counter += 1; }
        return got;
    }
    /* no tree teams without atomics: run_in_team just calls its function */
    static void db_gate_open(db_gate_t* g) { (void)g; }
    static int db_gate_wait(db_gate_t* g, int seen) { (void)g; return seen; }
    #define DB_HAS_TEAM 0
    #endif
    """
    ctypedef struct db_gate_t:
        int generation
        int sleepers
    ctypedef struct db_barrier_t:
        int count
        db_gate_t gate
    int db_team_size() noexcept nogil
    int db_thread_id() noexcept nogil
    void db_barrier_wait(db_barrier_t* b, int n) noexcept nogil
    Py_ssize_t db_next_task(Py_ssize_t* counter) noexcept nogil
    void db_gate_open(db_gate_t* g) noexcept nogil
    int db_gate_wait(db_gate_t* g, int seen) noexcept nogil
    bint DB_HAS_TEAM


cdef struct team_state:
    # a tree's thread team (NodeKernels.run_in_team): the workers wait for
    # the job gate to open, then run ctx's split (or leave if stop is set)
    db_gate_t job
    int stop
    int size
    split_ctx* ctx
    db_barrier_t barrier


cdef struct split_ctx:
    # what the threads of one split's region share (see NodeKernels.split)
    const X_BINNED_DTYPE_C* col       # the split feature's bins (NULL: from its entries)
    Py_ssize_t feature
    unsigned int* rows                # the node's rows (partition[start:stop])
    Py_ssize_t n
    Py_ssize_t start                  # of the node in the partition
    X_BINNED_DTYPE_C bin_idx
    bint missing_go_to_left
    X_BINNED_DTYPE_C missing_bin_idx
    const unsigned int* bits
    unsigned int* left
    unsigned int* right
    int n_chunks                      # partition chunks
    Py_ssize_t chunk
    long long n_left[MAX_PARTITION_CHUNKS]
    long long total_left
    bint fill                         # build the smaller child's histogram
    bint small_is_left
    hist_struct* small_base
    hist_struct* large_base
    const hist_struct* parent_base
    const unsigned char* masks[2]
    Y_DTYPE_C sums_g[2]
    Y_DTYPE_C sums_h[2]
    Y_DTYPE_C lower[2]
    Y_DTYPE_C upper[2]
    unsigned int counts[2]
    Y_DTYPE_C parent_scores[2]
    gain_config gcs[2]
    hist_job job
    Py_ssize_t next_task
    db_barrier_t* barrier             # the region's own, or the tree team's
    db_barrier_t own_barrier
    int team
    double t_partitioned
    double t_filled


cdef inline int _goes_left(X_BINNED_DTYPE_C b, X_BINNED_DTYPE_C bin_threshold,
                           bint missing_go_to_left, X_BINNED_DTYPE_C missing_bin_idx,
                           const unsigned int* cat_bitset) noexcept nogil:
    if b == missing_bin_idx:
        return missing_go_to_left
    if cat_bitset != NULL:
        return (cat_bitset[b >> 5] >> (b & 31)) & 1
    return b <= bin_threshold


cdef long long _partition_chunk_entries(const entry_table* t, Py_ssize_t f,
                                        const unsigned int* rows, Py_ssize_t start,
                                        Py_ssize_t stop, X_BINNED_DTYPE_C bin_threshold,
                                        bint missing_go_to_left,
                                        X_BINNED_DTYPE_C missing_bin_idx,
                                        const unsigned int* cat_bitset,
                                        unsigned int* left,
                                        unsigned int* right) noexcept nogil:
    """``_partition_chunk`` on a feature kept as entries; the same rows go
    each way. The rows of the feature's entries (``col_rows``) are walked
    along the node's rows, which are ascending (galloping past the entries
    between two rows: O(rows log(entries / rows)) for a small node): a row
    without an entry goes where the default bin goes, a row with one gets
    its bin from its own entries (``_entry_bin``). A row out of order costs
    a new search; without column lists every row's entries are searched."""
    cdef Py_ssize_t i, p = 0, step, begin = 0, end = 0
    cdef long long n_left = 0, n_right = 0
    cdef unsigned int row, nxt = 0xFFFFFFFF, prev = 0
    cdef int goes_left, goes_default = _goes_left(t.default_bin[f], bin_threshold,
                                                  missing_go_to_left, missing_bin_idx,
                                                  cat_bitset)
    cdef bint lists = t.col_ptr != NULL
    if lists:
        begin = t.col_ptr[f]
        end = t.col_ptr[f + 1]
        if start < stop:
            p = _lower_bound(t.col_rows, begin, end, rows[start])
            prev = rows[start]
        nxt = t.col_rows[p] if p < end else 0xFFFFFFFF
    for i in range(start, stop):
        row = rows[i]
        if not lists:
            goes_left = _goes_left(_entry_bin(t, row, f), bin_threshold, missing_go_to_left,
                                   missing_bin_idx, cat_bitset)
        else:
            if row < prev:  # out of order: search again
                p = _lower_bound(t.col_rows, begin, end, row)
                nxt = t.col_rows[p] if p < end else 0xFFFFFFFF
            prev = row
            goes_left = goes_default
            if nxt <= row:
                if nxt < row:  # skip the entries of rows not in the node
                    step = 1
                    while p + step < end and t.col_rows[p + step] < row:
                        p = p + step
                        step = step * 2
                    p = _lower_bound(t.col_rows, p + 1, min(p + step, end), row)
                    nxt = t.col_rows[p] if p < end else 0xFFFFFFFF
                if nxt == row:
                    goes_left = _goes_left(_entry_bin(t, row, f), bin_threshold,
                                           missing_go_to_left, missing_bin_idx, cat_bitset)
        left[start + n_left] = row
        right[start + n_right] = row
        n_left = n_left + goes_left
        n_right = n_right + 1 - goes_left
    return n_left


cdef class NodeKernels:
    """The compiled steps of growing one tree (see the module docstring).

    Parameters
    ----------
    X_binned : uint8 array (n_samples, n_columns), Fortran order
        The binned matrix: every feature, or with ``dense_features`` only
        those (the others are ``sparse``'s: the partition reads their bins
        from the rows' entries).
    X_rows : uint8 array (n_samples, n_columns), C order, or None
        Row-major copy of ``X_binned``'s columns ``rows_features`` for the
        histograms of scattered nodes; it must hold every feature that is
        not filled from ``sparse``'s entries.
    gradients, hessians : float32 arrays (n_samples,)
    partition : uint32 array
        The tree's rows (reordered in place as nodes split).
    left_buffer, right_buffer : uint32 arrays, at least as long as ``partition``
    partial : histogram array (max_chunks, n_records)
        Scratch for the per-chunk histograms of large nodes.
    feature_mask : uint8 array (n_features,)
        The tree's features: only they get histograms.
    n_bins_non_missing, missing_bin_idx, l2_regularization, min_samples_leaf,
    min_child_weight, min_split_gain, is_categorical, monotonic_cst,
    l1_regularization, max_cat_to_onehot, cat_smooth, cat_l2,
    min_data_per_group, max_cat_threshold
        As for ``_splitting.find_best_split``.
    hessians_are_constant : bool
    n_threads : int
    offsets : intp array (n_features + 1,) or None
        The histograms' layout: feature ``f``'s records are ``offsets[f] ..
        offsets[f+1]-1``, the last one its missing bin (at least
        ``n_bins_non_missing[f] + 1`` records); ``n_records`` is
        ``offsets[-1]``. None: every feature ``missing_bin_idx + 1`` records.
        Every histogram given to this object's methods is flat, of
        ``n_records`` records.
    sparse : SparseColumns or None
        The binned matrix's mostly-default features
        (``dartboost._sparse_columns``): filled from their entries.
    rows_features : int array (n_columns,) or None
        The features of ``X_rows``'s columns (None: all of them, in order).
    dense_features : int array (n_columns,) or None
        The features of ``X_binned``'s columns, increasing (None: all of
        them, in order); every feature not among them must be ``sparse``'s.
        ``n_features`` is then ``n_bins_non_missing``'s length.
    """
    cdef const X_BINNED_DTYPE_C[::1, :] X
    cdef const X_BINNED_DTYPE_C[:, ::1] X_rows
    cdef int[::1] row_col            # column of X_rows of each feature (-1: none)
    cdef int[::1] col_of             # column of X of each feature (-1: from entries)
    cdef bint cols_subset
    cdef const X_BINNED_DTYPE_C[::1] sp_default_bin
    cdef const Py_ssize_t[::1] sp_col_ptr
    cdef const unsigned int[::1] sp_col_rows
    cdef entry_table entries
    cdef bint rows_subset
    cdef bint has_rows
    cdef const G_H_DTYPE_C[::1] g
    cdef const G_H_DTYPE_C[::1] h
    cdef unsigned int[::1] partition
    cdef unsigned int[::1] left
    cdef unsigned int[::1] right
    cdef hist_struct[:, ::1] partial
    cdef const Py_ssize_t[::1] offsets
    cdef Py_ssize_t total           # records of one histogram
    cdef Py_ssize_t active_bins     # records of the tree's features
    cdef int[::1] active
    cdef int[::1] dense             # the active features read from the binned matrix
    cdef bint has_sparse
    cdef const unsigned char[::1] sp_is
    cdef const unsigned char[::1] sp_on
    cdef const Py_ssize_t[::1] sp_default
    cdef const Py_ssize_t[::1] sp_ptr
    cdef const unsigned int[::1] sp_records
    cdef const unsigned int[::1] n_bins_nm
    cdef const unsigned char[::1] is_cat
    cdef const signed char[::1] mono
    cdef search_config cfg
    cdef bint constant
    cdef int n_threads
    cdef Py_ssize_t n_features
    cdef split_struct* per_feature  # two rows of n_features: left, right child
    cdef team_state team
    cdef bint team_running
    cdef object team_error
    cdef object _team_fn
    cdef object _team_result

    def __cinit__(self):
        self.per_feature = NULL
        self.team_running = False

    def __init__(self, const X_BINNED_DTYPE_C[::1, :] X_binned, X_rows,
                 const G_H_DTYPE_C[::1] gradients, const G_H_DTYPE_C[::1] hessians,
                 unsigned int[::1] partition, unsigned int[::1] left_buffer,
                 unsigned int[::1] right_buffer, hist_struct[:, ::1] partial,
                 const unsigned char[::1] feature_mask,
                 const unsigned int[::1] n_bins_non_missing, unsigned int missing_bin_idx,
                 Y_DTYPE_C l2_regularization, unsigned int min_samples_leaf,
                 Y_DTYPE_C min_child_weight, Y_DTYPE_C min_split_gain,
                 const unsigned char[::1] is_categorical=None,
                 const signed char[::1] monotonic_cst=None,
                 Y_DTYPE_C l1_regularization=0., unsigned int max_cat_to_onehot=4,
                 Y_DTYPE_C cat_smooth=10., Y_DTYPE_C cat_l2=10.,
                 unsigned int min_data_per_group=100, unsigned int max_cat_threshold=32,
                 bint hessians_are_constant=False, int n_threads=1, offsets=None,
                 sparse=None, rows_features=None, dense_features=None):
        self.cols_subset = dense_features is not None
        n_features = n_bins_non_missing.shape[0] if self.cols_subset else X_binned.shape[1]
        if feature_mask.shape[0] != n_features or n_bins_non_missing.shape[0] != n_features:
            raise ValueError("feature_mask and n_bins_non_missing need one entry "
                             f"per feature ({n_features})")
        if offsets is None:
            offsets = padded_offsets(n_features, missing_bin_idx + 1)
        self.offsets = check_offsets(offsets, n_features, n_bins_non_missing)
        self.total = self.offsets[n_features]
        if partial.shape[1] != self.total or partial.shape[0] < 1:
            raise ValueError(f"partial has shape {tuple(partial.shape)[:2]}; expected "
                             f"(max_chunks, {self.total})")
        if left_buffer.shape[0] < partition.shape[0] or right_buffer.shape[0] < partition.shape[0]:
            raise ValueError("the partition buffers are shorter than the partition")
        if gradients.shape[0] != X_binned.shape[0] or hessians.shape[0] != X_binned.shape[0]:
            raise ValueError("gradients and hessians need one value per row")
        self.X = X_binned
        if self.cols_subset:
            dense_features = np.asarray(dense_features, dtype=np.intp)
            if (dense_features.shape != (X_binned.shape[1],) or np.any(dense_features < 0)
                    or np.any(dense_features >= n_features)
                    or np.any(np.diff(dense_features) <= 0)):
                raise ValueError("X_binned must be the columns dense_features (increasing)")
            col_of = np.full(n_features, -1, dtype=np.intc)
            col_of[dense_features] = np.arange(dense_features.size, dtype=np.intc)
            self.col_of = col_of
        # (a copy of one column would read as column-major: not worth it)
        self.has_rows = X_rows is not None and X_rows.shape[1] >= 2
        self.rows_subset = rows_features is not None
        if self.has_rows:
            self.X_rows = X_rows
            if rows_features is None:
                rows_features = np.arange(n_features)
            rows_features = np.asarray(rows_features, dtype=np.intp)
            if (self.X_rows.shape[0] != X_binned.shape[0]
                    or rows_features.shape != (self.X_rows.shape[1],)
                    or np.any(rows_features < 0) or np.any(rows_features >= n_features)
                    or np.any(np.diff(rows_features) <= 0)):
                raise ValueError("X_rows must be X_binned's columns rows_features "
                                 "(increasing) in row-major order")
            row_col = np.full(n_features, -1, dtype=np.intc)
            row_col[rows_features] = np.arange(rows_features.size, dtype=np.intc)
            self.row_col = row_col
        self.g = gradients
        self.h = hessians
        self.partition = partition
        self.left = left_buffer
        self.right = right_buffer
        self.partial = partial
        self.active = np.flatnonzero(np.asarray(feature_mask)).astype(np.intc)
        parts = sparse_parts(sparse, X_binned.shape[0], self.offsets, feature_mask)
        self.has_sparse = parts is not None
        if parts is None:
            self.dense = self.active
        else:
            (self.sp_is, self.sp_default, self.sp_ptr, self.sp_records, self.sp_on,
             self.dense) = parts
        if self.has_rows and np.any(np.asarray(self.row_col)[np.asarray(self.dense)] < 0):
            raise ValueError("X_rows lacks a feature that is not filled from sparse entries")
        self.entries.row_ptr = NULL
        if self.cols_subset:
            missing = np.asarray(self.col_of) < 0
            if parts is not None:
                missing &= np.asarray(self.sp_is) == 0
            if np.any(missing):
                raise ValueError("X_binned lacks a feature that is not kept as sparse entries")
            if parts is not None:
                # the entries features' default codes, for the partition
                code = np.asarray(self.sp_default) - np.asarray(self.offsets)[:-1]
                last = np.diff(np.asarray(self.offsets)) - 1
                self.sp_default_bin = np.where(code == last, missing_bin_idx,
                                               np.minimum(code, 255)).astype(np.uint8)
                self.entries.row_ptr = &self.sp_ptr[0]
                self.entries.records = (&self.sp_records[0] if self.sp_records.shape[0] > 0
                                        else NULL)
                self.entries.offsets = &self.offsets[0]
                self.entries.default_bin = &self.sp_default_bin[0]
                self.entries.missing_bin_idx = <X_BINNED_DTYPE_C>missing_bin_idx
                self.entries.col_ptr = NULL
                self.entries.col_rows = NULL
                col_ptr = getattr(sparse, "col_ptr", None)
                if col_ptr is not None:
                    col_ptr = np.ascontiguousarray(col_ptr, dtype=np.intp)
                    col_rows = np.ascontiguousarray(sparse.col_rows, dtype=np.uint32)
                    if (col_ptr.shape != (n_features + 1,) or col_ptr[0] != 0
                            or col_ptr[-1] != col_rows.shape[0]
                            or np.any(np.diff(col_ptr) < 0)
                            or (col_rows.shape[0]
                                and col_rows.max() >= X_binned.shape[0])):
                        raise ValueError("sparse col_ptr / col_rows do not fit the matrix")
                    self.sp_col_ptr = col_ptr
                    self.sp_col_rows = col_rows
                    self.entries.col_ptr = &self.sp_col_ptr[0]
                    self.entries.col_rows = (&self.sp_col_rows[0] if col_rows.shape[0] > 0
                                             else NULL)
        sizes = np.diff(np.asarray(self.offsets))
        self.active_bins = int(sizes[np.asarray(self.active)].sum())
        self.n_bins_nm = n_bins_non_missing
        self.n_features = n_features
        self.constant = hessians_are_constant
        self.n_threads = max(1, n_threads)
        self.cfg.n_bins_non_missing = &n_bins_non_missing[0] if n_features > 0 else NULL
        self.cfg.missing_bin_idx = missing_bin_idx
        self.cfg.offsets = &self.offsets[0]
        self.cfg.l2 = l2_regularization
        self.cfg.min_samples_leaf = min_samples_leaf
        self.cfg.min_child_weight = min_child_weight
        self.cfg.min_split_gain = min_split_gain
        self.cfg.l1 = l1_regularization
        self.cfg.cat.max_cat_to_onehot = max_cat_to_onehot
        self.cfg.cat.cat_smooth = cat_smooth
        self.cfg.cat.cat_l2 = cat_l2
        self.cfg.cat.min_data_per_group = min_data_per_group
        self.cfg.cat.max_cat_threshold = max_cat_threshold
        self.cfg.is_categorical = NULL
        self.cfg.monotonic_cst = NULL
        if is_categorical is not None:
            if is_categorical.shape[0] != n_features:
                raise ValueError("is_categorical must have one flag per feature")
            self.is_cat = is_categorical
            self.cfg.is_categorical = &is_categorical[0]
        if monotonic_cst is not None:
            if monotonic_cst.shape[0] != n_features:
                raise ValueError("monotonic_cst must have one entry per feature")
            self.mono = monotonic_cst
            self.cfg.monotonic_cst = &monotonic_cst[0]
        self.per_feature = <split_struct*> malloc(2 * max(n_features, 1) * sizeof(split_struct))
        if self.per_feature == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.per_feature)

    cdef void _plan(self, hist_job* job, Py_ssize_t start, Py_ssize_t stop, bint all_rows,
                    hist_struct* hist) noexcept nogil:
        """A histogram job for ``partition[start:stop]`` into ``hist``."""
        cdef bint row_major
        job.n = stop - start
        job.n_features = self.n_features
        job.offsets = &self.offsets[0]
        job.total = self.total
        job.n_active = self.active.shape[0]
        job.active = &self.active[0] if job.n_active > 0 else NULL
        job.n_dense = self.dense.shape[0]
        job.dense = &self.dense[0] if job.n_dense > 0 else NULL
        job.row_ptr = NULL
        if self.has_sparse:
            job.is_sparse = &self.sp_is[0]
            job.default_record = &self.sp_default[0]
            job.row_ptr = &self.sp_ptr[0]
            job.records = &self.sp_records[0] if self.sp_records.shape[0] > 0 else NULL
            job.record_on = &self.sp_on[0]
        row_major = self.has_rows and job.n * _row_major_below < self.X.shape[0]
        job.column_block = _column_block
        if row_major:
            job.X = &self.X_rows[0, 0]
            job.row_stride = self.X_rows.shape[1]
            job.row_col = &self.row_col[0] if self.rows_subset else NULL
            job.col_stride = 1
        else:
            job.X = &self.X[0, 0]
            job.row_stride = 1
            job.col_stride = self.X.shape[0]
            job.row_col = &self.col_of[0] if self.cols_subset else NULL
        job.rows = NULL if all_rows else &self.partition[start]
        job.g = &self.g[0]
        job.h = &self.h[0]
        job.hist = hist
        job.hessians_are_constant = self.constant
        job.h0 = self.h[0] if self.h.shape[0] > 0 else 0.
        _plan_job(job, self.partial.shape[0], row_major,
                  _threads(job.n * job.n_active, MIN_WORK_PER_THREAD, self.n_threads))
        job.partial = &self.partial[0, 0] if job.n_chunks > 1 else NULL

    cdef void _fill(self, hist_job* job) noexcept nogil:
        cdef Py_ssize_t task
        cdef int n_threads = _threads(job.n * job.n_active, MIN_WORK_PER_THREAD,
                                      self.n_threads)
        for task in prange(job.n_tasks, schedule='dynamic', num_threads=n_threads):
            _run_hist_task(job, task)

    def build(self, Py_ssize_t start, Py_ssize_t stop, hist_struct[::1] hist,
              bint all_rows=False):
        """Fill ``hist`` with the sums of ``partition[start:stop]`` (rows
        ``0 .. stop-1`` in order with ``all_rows``: the root of a full tree)."""
        cdef hist_job job
        cdef Py_ssize_t i
        self._check_hist(hist)
        if stop <= start or self.active.shape[0] == 0:
            return
        if start < 0 or stop > self.partition.shape[0]:
            raise ValueError("rows out of the partition")
        cdef double t0 = _now()
        with nogil:
            self._plan(&job, start, stop, all_rows, &hist[0])
            self._fill(&job)
            if _needs_finish(&job):
                for i in prange(job.n_active, schedule='static',
                                num_threads=_threads(self.active_bins,
                                                     MIN_BINS_PER_THREAD, self.n_threads)):
                    _finish_hist_feature(&job, i)
        _phase_seconds[3] += _now() - t0

    cdef int _check_hist(self, hist_struct[::1] hist) except -1:
        if hist.shape[0] != self.total:
            raise ValueError(f"hist has {hist.shape[0]} records; the layout has {self.total}")
        return 0

    def find(self, hist_struct[::1] hist, Y_DTYPE_C sum_gradients,
             Y_DTYPE_C sum_hessians, unsigned int n_samples,
             const unsigned char[::1] mask, Y_DTYPE_C lower=-INFINITY,
             Y_DTYPE_C upper=INFINITY):
        """Best split of a node (``find_best_split``'s result) over the
        features in ``mask``, within the node's value bounds."""
        cdef gain_config gc
        cdef Y_DTYPE_C parent_score
        cdef Py_ssize_t i, f
        cdef int best
        self._check_hist(hist)
        if mask.shape[0] != self.n_features:
            raise ValueError("mask needs one flag per feature")
        cdef double t0 = _now()
        with nogil:
            parent_score = _node_setup(&self.cfg, sum_gradients, sum_hessians, lower, upper,
                                       &gc)
            for f in range(self.n_features):
                self.per_feature[f].gain = -1.
                self.per_feature[f].feature_idx = -1
            for i in prange(self.active.shape[0], schedule='dynamic',
                            num_threads=_threads(self.active_bins,
                                                 MIN_BINS_PER_THREAD, self.n_threads)):
                f = self.active[i]
                if mask[f]:
                    self.per_feature[f] = _scan_any(&self.cfg, &hist[0], <int>f, sum_gradients,
                                                    sum_hessians, n_samples, parent_score,
                                                    &gc)
            best = _pick_best(&self.cfg, self.per_feature, self.n_features)
        _phase_seconds[3] += _now() - t0
        return None if best < 0 else _split_tuple(&self.per_feature[best])

    def split(self, Py_ssize_t start, Py_ssize_t stop, int feature, unsigned int bin_idx,
              bint missing_go_to_left, const unsigned int[::1] cat_bitset,
              hist_struct[::1] parent_hist, hist_struct[::1] small_hist,
              hist_struct[::1] large_hist, bint small_is_left,
              Y_DTYPE_C left_sum_gradients, Y_DTYPE_C left_sum_hessians,
              Y_DTYPE_C left_lower, Y_DTYPE_C left_upper, const unsigned char[::1] left_mask,
              Y_DTYPE_C right_sum_gradients, Y_DTYPE_C right_sum_hessians,
              Y_DTYPE_C right_lower, Y_DTYPE_C right_upper,
              const unsigned char[::1] right_mask, Py_ssize_t n_left_expected=-1):
        """Split the node ``partition[start:stop]``; return
        ``(n_left, left_split, right_split)``.

        Partitions the node's rows (left first, order kept) on ``feature``
        (a set split when ``cat_bitset`` is given); with ``small_hist``, fills
        it for the smaller child (the left one if ``small_is_left``); with
        ``large_hist`` too, sets it to ``parent_hist`` minus that (it may be
        ``parent_hist`` itself: updated in place); and
        searches the best split of each child whose mask is given (else its
        split is ``None``). The children's sums and bounds are the grower's;
        ``n_left_expected`` (the histogram's count, if known) only sizes the
        thread team. All of it runs in one parallel region whose phases are
        separated by spinning barriers.
        """
        cdef:
            Py_ssize_t n = stop - start, n_left
            Py_ssize_t n_active = self.active.shape[0], nf = self.n_features
            const unsigned int* bits = NULL
            const unsigned char* masks[2]
            hist_struct* small_base = NULL
            hist_struct* large_base = NULL
            const hist_struct* parent_base = NULL
            int best_left = -1, best_right = -1
            bint any_find
            double t0, t3
            split_ctx ctx
            int n_team
        if stop <= start or start < 0 or stop > self.partition.shape[0]:
            raise ValueError("the node's rows are out of the partition")
        if not 0 <= feature < nf:
            raise ValueError(f"feature {feature} out of range")
        if cat_bitset is not None:
            if cat_bitset.shape[0] != CAT_WORDS:
                raise ValueError(f"cat_bitset must have {CAT_WORDS} words")
            bits = &cat_bitset[0]
        masks[0] = NULL
        masks[1] = NULL
        if left_mask is not None:
            if left_mask.shape[0] != nf:
                raise ValueError("left_mask needs one flag per feature")
            masks[0] = &left_mask[0]
        if right_mask is not None:
            if right_mask.shape[0] != nf:
                raise ValueError("right_mask needs one flag per feature")
            masks[1] = &right_mask[0]
        if small_hist is not None:
            self._check_hist(small_hist)
            small_base = &small_hist[0]
            if large_hist is not None:
                self._check_hist(large_hist)
                self._check_hist(parent_hist)
                large_base = &large_hist[0]
                parent_base = &parent_hist[0]
        # a child is searched only with its histogram
        if masks[0] != NULL and (small_base == NULL if small_is_left else large_base == NULL):
            raise ValueError("left_mask is given but the left child has no histogram")
        if masks[1] != NULL and (large_base == NULL if small_is_left else small_base == NULL):
            raise ValueError("right_mask is given but the right child has no histogram")
        any_find = masks[0] != NULL or masks[1] != NULL
        if n_left_expected < 0:
            n_left_expected = n // 2
        ctx.feature = feature
        if not self.cols_subset:
            ctx.col = &self.X[0, feature]
        elif self.col_of[feature] >= 0:
            ctx.col = &self.X[0, self.col_of[feature]]
        else:
            ctx.col = NULL  # a feature kept as entries
        ctx.rows = &self.partition[start]
        ctx.n = n
        ctx.start = start
        ctx.bin_idx = <X_BINNED_DTYPE_C>bin_idx
        ctx.missing_go_to_left = missing_go_to_left
        ctx.missing_bin_idx = <X_BINNED_DTYPE_C>self.cfg.missing_bin_idx
        ctx.bits = bits
        ctx.left = &self.left[0]
        ctx.right = &self.right[0]
        ctx.n_chunks = <int>max(1, min(<Py_ssize_t>MAX_PARTITION_CHUNKS,
                                       n // PARTITION_ROWS_PER_THREAD))
        ctx.chunk = (n + ctx.n_chunks - 1) // ctx.n_chunks
        ctx.fill = small_base != NULL and n_active > 0
        ctx.small_is_left = small_is_left
        ctx.small_base = small_base
        ctx.large_base = large_base
        ctx.parent_base = parent_base
        ctx.masks[0] = masks[0]
        ctx.masks[1] = masks[1]
        ctx.sums_g[0] = left_sum_gradients
        ctx.sums_h[0] = left_sum_hessians
        ctx.sums_g[1] = right_sum_gradients
        ctx.sums_h[1] = right_sum_hessians
        ctx.lower[0] = left_lower
        ctx.upper[0] = left_upper
        ctx.lower[1] = right_lower
        ctx.upper[1] = right_upper
        ctx.own_barrier.count = 0
        ctx.own_barrier.gate.generation = 0
        ctx.own_barrier.gate.sleepers = 0
        ctx.barrier = &ctx.own_barrier
        # the team: as many threads as the largest phase is worth (the
        # partition of n rows; the filling, bounded by the node's rows times
        # features; the per-feature phase)
        n_team = _threads(n, PARTITION_ROWS_PER_THREAD, self.n_threads)
        if ctx.fill:
            n_team = max(n_team, _threads(min(n_left_expected, n - n_left_expected) * n_active,
                                          MIN_WORK_PER_THREAD, self.n_threads))
            n_team = max(n_team, _threads(self.active_bins * (1 + any_find),
                                          MIN_BINS_PER_THREAD, self.n_threads))
        t0 = _now()
        with nogil:
            if n_team <= 1:
                self._split_thread(&ctx, 0, 1)
            elif self.team_running:
                # the tree's team (run_in_team) is waiting: hand it the job
                ctx.barrier = &self.team.barrier
                self.team.ctx = &ctx
                db_gate_open(&self.team.job)
                self._split_thread(&ctx, 0, self.team.size)
                db_barrier_wait(&self.team.barrier, self.team.size)  # all done with ctx
            else:
                with parallel(num_threads=n_team):
                    self._split_thread(&ctx, db_thread_id(), db_team_size())
            n_left = ctx.total_left
            if masks[0] != NULL:
                best_left = _pick_best(&self.cfg, self.per_feature, nf)
            if masks[1] != NULL:
                best_right = _pick_best(&self.cfg, self.per_feature + nf, nf)
            t3 = _now()
        _phase_seconds[0] += ctx.t_partitioned - t0
        if ctx.fill:
            _phase_seconds[1] += ctx.t_filled - ctx.t_partitioned
            _phase_seconds[2] += t3 - ctx.t_filled
        return (n_left,
                None if best_left < 0 else _split_tuple(&self.per_feature[best_left]),
                None if best_right < 0 else _split_tuple(&self.per_feature[nf + best_right]))

    def run_in_team(self, fn):
        """Return ``fn()``, run while this tree's threads wait in one parallel
        region: every :meth:`split` that ``fn`` makes is handed to them (one
        region per tree instead of one per split). The calling thread runs
        ``fn`` (holding the GIL); the others spin, then yield, between splits."""
        cdef int n = self.n_threads
        if n <= 1 or not DB_HAS_TEAM or not _tree_teams or self.team_running:
            return fn()
        self.team.job.generation = 0
        self.team.job.sleepers = 0
        self.team.stop = 0
        self.team.barrier.count = 0
        self.team.barrier.gate.generation = 0
        self.team.barrier.gate.sleepers = 0
        self.team_error = None
        self._team_fn = fn
        self._team_result = None
        with nogil, parallel(num_threads=n):
            self._team_thread(db_thread_id(), db_team_size())
        error, self.team_error = self.team_error, None
        result, self._team_result, self._team_fn = self._team_result, None, None
        if error is not None:
            raise error
        return result

    cdef void _team_thread(self, int tid, int size) noexcept nogil:
        cdef int seen = 0
        if tid == 0:
            self.team.size = size
            self._team_master()
            self.team.stop = 1
            db_gate_open(&self.team.job)
            return
        while True:
            seen = db_gate_wait(&self.team.job, seen)
            if self.team.stop:
                return
            self._split_thread(self.team.ctx, tid, self.team.size)
            db_barrier_wait(&self.team.barrier, self.team.size)

    cdef void _team_master(self) noexcept nogil:
        with gil:
            self.team_running = self.team.size > 1
            try:
                self._team_result = self._team_fn()
            except BaseException as exc:
                self.team_error = exc
            finally:
                self.team_running = False

    cdef void _split_thread(self, split_ctx* ctx, int tid, int team) noexcept nogil:
        """One thread's share of a split (``tid`` of a team of ``team``):
        partition chunks, copy them back, histogram tasks, per-feature tasks."""
        cdef int t, child
        cdef Py_ssize_t start, stop, task, f, nf = self.n_features
        cdef long long left_offset, right_offset, total_left, nl
        cdef split_struct* row
        if tid == 0:
            ctx.team = team
        # 1. partition the chunks (each into the buffers at its own offsets)
        t = tid
        while t < ctx.n_chunks:
            start = t * ctx.chunk
            stop = min(start + ctx.chunk, ctx.n)
            start = min(start, stop)
            if ctx.col != NULL:
                ctx.n_left[t] = _partition_chunk(ctx.col, ctx.rows, start, stop, ctx.bin_idx,
                                                 ctx.missing_go_to_left, ctx.missing_bin_idx,
                                                 ctx.bits, ctx.left, ctx.right)
            else:
                ctx.n_left[t] = _partition_chunk_entries(
                    &self.entries, ctx.feature, ctx.rows, start, stop, ctx.bin_idx,
                    ctx.missing_go_to_left, ctx.missing_bin_idx, ctx.bits, ctx.left,
                    ctx.right)
            t += team
        db_barrier_wait(ctx.barrier, team)
        # 2. copy them back, left rows first (every thread sums the chunks'
        # counts itself: no barrier for a shared prefix sum)
        total_left = 0
        for t in range(ctx.n_chunks):
            total_left += ctx.n_left[t]
        left_offset = 0
        right_offset = total_left
        for t in range(ctx.n_chunks):
            start = min(t * ctx.chunk, ctx.n)
            stop = min(start + ctx.chunk, ctx.n)
            nl = ctx.n_left[t]
            if t % team == tid:
                if nl > 0:
                    memcpy(ctx.rows + left_offset, ctx.left + start, nl * sizeof(unsigned int))
                if (stop - start) - nl > 0:
                    memcpy(ctx.rows + right_offset, ctx.right + start,
                           ((stop - start) - nl) * sizeof(unsigned int))
            left_offset += nl
            right_offset += (stop - start) - nl
        if tid == 0:
            ctx.total_left = total_left
            ctx.counts[0] = <unsigned int>total_left
            ctx.counts[1] = <unsigned int>(ctx.n - total_left)
            for child in range(2):
                if ctx.masks[child] != NULL:
                    ctx.parent_scores[child] = _node_setup(
                        &self.cfg, ctx.sums_g[child], ctx.sums_h[child], ctx.lower[child],
                        ctx.upper[child], &ctx.gcs[child])
                    row = self.per_feature + child * nf
                    for f in range(nf):
                        row[f].gain = -1.
                        row[f].feature_idx = -1
            if ctx.fill:
                if ctx.small_is_left:
                    self._plan(&ctx.job, ctx.start, ctx.start + total_left, False,
                               ctx.small_base)
                else:
                    self._plan(&ctx.job, ctx.start + total_left, ctx.start + ctx.n, False,
                               ctx.small_base)
            ctx.next_task = 0
        if not ctx.fill:
            if tid == 0:
                ctx.t_partitioned = _now()
            return
        db_barrier_wait(ctx.barrier, team)
        if tid == 0:
            ctx.t_partitioned = _now()
        # 3. the smaller child's histogram tasks
        task = db_next_task(&ctx.next_task)
        while task < ctx.job.n_tasks:
            _run_hist_task(&ctx.job, task)
            task = db_next_task(&ctx.next_task)
        db_barrier_wait(ctx.barrier, team)
        if tid == 0:
            ctx.t_filled = _now()
            ctx.next_task = 0
        db_barrier_wait(ctx.barrier, team)
        # 4. per feature: add the small child's chunks, subtract for the
        # large one, search both (all of a feature's steps in one task)
        task = db_next_task(&ctx.next_task)
        while task < ctx.job.n_active:
            self._post_feature(ctx, task)
            task = db_next_task(&ctx.next_task)

    cdef void _post_feature(self, split_ctx* ctx, Py_ssize_t i) noexcept nogil:
        """Feature ``active[i]`` of a split: its histograms and searches.

        A sparse feature none of whose smaller child's rows is outside its
        default bin (most words, in most nodes) has exact zeros in every
        other record of that child: the larger child's histogram, when it
        is the parent's updated in place, changes in the default record
        only, and the smaller child has nothing to split (one non-empty
        bin), so both passes are skipped; the same holds for the larger
        child's search when all its rows are in the default bin. A split
        needs rows on both sides (``min_samples_leaf`` >= 1): the results
        are the same."""
        cdef Py_ssize_t f = self.active[i], off = self.offsets[f], d = 0
        cdef int child, large_child = 1 if ctx.small_is_left else 0
        cdef bint small_in_default = False, large_in_default = False
        if _needs_finish(&ctx.job):
            _finish_hist_feature(&ctx.job, i)
        if ctx.job.n_sparse_tasks > 0 and self.sp_is[f]:
            d = self.sp_default[f]
            small_in_default = ctx.small_base[d].count == ctx.job.n
        if ctx.large_base != NULL:
            if small_in_default and ctx.large_base == ctx.parent_base:
                _subtract_hist_feature(ctx.parent_base + d, ctx.small_base + d,
                                       ctx.large_base + d, 1)
            else:
                _subtract_hist_feature(ctx.parent_base + off, ctx.small_base + off,
                                       ctx.large_base + off, self.offsets[f + 1] - off)
            if ctx.job.n_sparse_tasks > 0 and self.sp_is[f]:
                large_in_default = ctx.large_base[d].count == ctx.counts[large_child]
        for child in range(2):
            if ctx.masks[child] != NULL and ctx.masks[child][f]:
                if (small_in_default if child != large_child else large_in_default):
                    continue  # one non-empty bin: stays "no split"
                self.per_feature[child * self.n_features + f] = _scan_any(
                    &self.cfg,
                    ctx.small_base if (child == 0) == ctx.small_is_left else ctx.large_base,
                    <int>f, ctx.sums_g[child], ctx.sums_h[child], ctx.counts[child],
                    ctx.parent_scores[child], &ctx.gcs[child])
