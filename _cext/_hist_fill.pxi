# Histogram filling shared by _histogram.pyx (one node per call) and
# _grow.pyx (the fused per-split step): textually included by both, so the
# two run the same code and give the same sums.
#
# Work is split into tasks of (row chunk, feature block) so that both many
# rows (row-parallel, one partial histogram per chunk) and many features
# (feature-parallel) keep every thread busy. The chunking depends only on the
# node's size and the histogram's shape, never on the thread count, and the
# chunks' partial histograms are added in chunk order: the sums, hence the
# trees, are the same for any number of threads. The feature blocks may
# depend on the thread count: a feature's sums do not depend on which other
# features share its pass.
#
# A histogram is flat: feature f's records are hist[offsets[f] : offsets[f+1]],
# one per non-missing bin, and the last one is its missing bin (whose code in
# the binned matrix is the global missing_bin_idx: a bin past a feature's
# last record is clamped onto it). So a feature costs its own bins, not the
# widest feature's (a sparse matrix's features have a few bins each). A
# chunk's partial histogram has the same layout, chunk c at partial + c * total.
#
# Mostly-default ("sparse") features (dartboost/_sparse_columns.py) are not
# read from the binned matrix: a node's rows' non-default entries (a CSR
# structure of histogram records, built once per fit) fill them, one task per
# row chunk for all of them, which also sums the chunk's gradients and
# hessians; their default bin is then the node's totals minus their other
# records (_finish_hist_feature). The chunks are the same as the dense
# features', so the sums still never depend on the thread count.
#
# The binned matrix is read through strides, so one kernel serves the
# column-major matrix (blocks of TILE features: a row's bins of a block are
# in TILE columns) and a row-major copy (blocks of up to MAX_BLOCK features:
# a row's bins of a block are one cache line, read once for all of them).

from _common cimport X_BINNED_DTYPE_C, Y_DTYPE_C, G_H_DTYPE_C, hist_struct

cdef enum:
    # Rows per chunk of a node; a node with fewer rows is one chunk. Small
    # enough that a node of some 10^5 rows gives many threads work, large
    # enough that zeroing and adding a chunk's partial histogram (n_bins per
    # feature) costs a few percent of filling it (CHUNK_ROWS per feature).
    CHUNK_ROWS = 16384
    # Features of a block on the column-major matrix: each row's gradient,
    # hessian and index are loaded once per block, and the block's histogram
    # updates are independent chains the CPU overlaps.
    TILE = 4
    # Most features of a block on a row-major matrix (its bins of one row
    # are 64 contiguous bytes; its histograms, 64 x 256 bins, stay in L2).
    MAX_BLOCK = 64
    # Tasks per thread a node is cut into when it can be (dynamic
    # scheduling then evens out chunks of unequal cost).
    TASKS_PER_THREAD = 3
    # Most row chunks of a node (the per-chunk totals live in the job).
    MAX_CHUNKS = 64
    # The largest code of the binned matrix (uint8): a feature with a record
    # for every code needs no clamping of the missing code onto its last.
    MAX_CODE = 255


cdef struct hist_job:
    # everything a histogram task reads; filled by _plan_job
    const X_BINNED_DTYPE_C* X        # bins of row r, feature f: X[r * row_stride + f * col_stride]
    Py_ssize_t row_stride
    Py_ssize_t col_stride
    const int* row_col               # the matrix read holds some features: f is its column
                                     # row_col[f] (NULL: it has every feature, f is column f)
    const unsigned int* rows         # the node's rows (ascending), or NULL: rows 0..n-1
    const G_H_DTYPE_C* g
    const G_H_DTYPE_C* h
    Py_ssize_t n
    Py_ssize_t n_chunks
    Py_ssize_t chunk_len
    const int* active                # features to fill (and finish)
    Py_ssize_t n_active
    const int* dense                 # those read from the binned matrix
    Py_ssize_t n_dense
    Py_ssize_t column_block          # most features per task on the column-major matrix
    Py_ssize_t block                 # features per task
    Py_ssize_t n_blocks
    Py_ssize_t n_tasks
    Py_ssize_t n_features
    const Py_ssize_t* offsets        # feature f: records offsets[f] .. offsets[f+1]-1
    Py_ssize_t total                 # records of one histogram (offsets[n_features])
    hist_struct* hist                # (total,)
    hist_struct* partial             # (max_chunks, total) scratch
    bint hessians_are_constant
    Y_DTYPE_C h0
    # the sparse features (see above); n_sparse_tasks == 0: none is active
    const unsigned char* is_sparse   # per feature
    const Py_ssize_t* default_record # per feature
    const Py_ssize_t* row_ptr        # row r's entries: records[row_ptr[r] : row_ptr[r+1]]
    const unsigned int* records
    const unsigned char* record_on   # per record: of an active sparse feature
    Py_ssize_t n_sparse_tasks
    Y_DTYPE_C chunk_g[MAX_CHUNKS]    # each chunk's sums (sparse tasks)
    Y_DTYPE_C chunk_h[MAX_CHUNKS]


cdef inline Py_ssize_t _n_chunks(Py_ssize_t n_rows, Py_ssize_t max_chunks) noexcept nogil:
    cdef Py_ssize_t c = (n_rows + CHUNK_ROWS - 1) // CHUNK_ROWS
    if c > max_chunks:
        c = max_chunks
    if c > MAX_CHUNKS:
        c = MAX_CHUNKS
    return c if c > 1 else 1


cdef inline void _plan_job(hist_job* job, Py_ssize_t max_chunks, bint row_major,
                           int n_threads) noexcept nogil:
    """Chunks (from the node's size only) and feature blocks (enough tasks
    for ``n_threads``) of ``job``; ``n``, ``n_active``, ``dense``,
    ``n_dense``, ``n_features``, ``column_block`` (at most MAX_BLOCK) and
    the sparse fields (``row_ptr`` NULL: no sparse feature) must be set. The
    sparse tasks, one per chunk, come first (the longest)."""
    cdef Py_ssize_t max_block = MAX_BLOCK if row_major else job.column_block
    cdef Py_ssize_t want
    job.n_chunks = _n_chunks(job.n, max_chunks)
    job.chunk_len = (job.n + job.n_chunks - 1) // job.n_chunks
    job.n_sparse_tasks = 0
    if job.row_ptr != NULL and job.n > 0 and job.n_dense < job.n_active:
        job.n_sparse_tasks = job.n_chunks
    if job.n_dense == 0 or job.n == 0:
        job.n_blocks = 0
        job.block = 1
        job.n_tasks = job.n_sparse_tasks
        return
    # blocks: as few as give every thread TASKS_PER_THREAD tasks, none wider
    # than max_block, and on the row-major copy none narrower than TILE
    want = (TASKS_PER_THREAD * n_threads + job.n_chunks - 1) // job.n_chunks
    if n_threads <= 1:
        want = 1
    job.n_blocks = (job.n_dense + max_block - 1) // max_block
    if want > job.n_blocks:
        job.n_blocks = want
        if row_major and job.n_blocks > (job.n_dense + TILE - 1) // TILE:
            job.n_blocks = (job.n_dense + TILE - 1) // TILE
    if job.n_blocks > job.n_dense:
        job.n_blocks = job.n_dense
    if job.n_blocks < 1:
        job.n_blocks = 1
    job.block = (job.n_dense + job.n_blocks - 1) // job.n_blocks
    job.n_blocks = (job.n_dense + job.block - 1) // job.block
    job.n_tasks = job.n_sparse_tasks + job.n_blocks * job.n_chunks


cdef void _fill_block(const hist_job* job, Py_ssize_t start, Py_ssize_t stop,
                      const int* features, int n_block, hist_struct** out,
                      bint final) noexcept nogil:
    """Zero then fill ``out[t]`` (feature ``features[t]``'s records) with its
    sums over the rows ``rows[start:stop]`` (``start:stop`` when ``rows`` is
    NULL).

    Gradients are read at the rows themselves: a node's rows are ascending
    (the partition is stable), so this is a forward walk the prefetcher
    follows, and no gathered copy is needed. With constant hessians only
    gradients and counts are summed; ``final`` (the block is the whole
    histogram, not a chunk's partial) then sets ``sum_hessians = count * h0``.
    """
    cdef Py_ssize_t t, b
    cdef int last[MAX_BLOCK]    # each feature's last record: its missing bin
    cdef bint clamp = False     # a feature of the block has fewer records than codes
    for t in range(n_block):
        last[t] = <int>(job.offsets[features[t] + 1] - job.offsets[features[t]] - 1)
        if last[t] < MAX_CODE:
            clamp = True
        for b in range(last[t] + 1):
            out[t][b].sum_gradients = 0.
            out[t][b].sum_hessians = 0.
            out[t][b].count = 0
    # each loop in two copies (the flag is a constant of the call: the
    # compiler drops the clamp from the copy without it): blocks of
    # full-width features, all of a dense table's, keep the plain loop
    if job.row_stride == 1 and n_block <= TILE:
        if clamp:
            _fill_columns_tile(job.X, job.col_stride, job.row_col, job.rows, job.g, job.h,
                               start, stop, features, last, n_block, out,
                               job.hessians_are_constant, True)
        else:
            _fill_columns_tile(job.X, job.col_stride, job.row_col, job.rows, job.g, job.h,
                               start, stop, features, last, n_block, out,
                               job.hessians_are_constant, False)
    elif job.row_stride == 1:
        if clamp:
            _fill_columns(job.X, job.col_stride, job.row_col, job.rows, job.g, job.h,
                          start, stop, features, last, n_block, out,
                          job.hessians_are_constant, True)
        else:
            _fill_columns(job.X, job.col_stride, job.row_col, job.rows, job.g, job.h,
                          start, stop, features, last, n_block, out,
                          job.hessians_are_constant, False)
    else:
        if clamp:
            _fill_rows(job.X, job.row_stride, job.row_col, job.rows, job.g, job.h, start,
                       stop, features, last, n_block, out, job.hessians_are_constant, True)
        else:
            _fill_rows(job.X, job.row_stride, job.row_col, job.rows, job.g, job.h, start,
                       stop, features, last, n_block, out, job.hessians_are_constant, False)
    if job.hessians_are_constant and final:
        for t in range(n_block):
            for b in range(last[t] + 1):
                out[t][b].sum_hessians = out[t][b].count * job.h0


cdef inline unsigned int _record(X_BINNED_DTYPE_C b, int last, bint clamp) noexcept nogil:
    # a feature's record of bin b: the missing code (past its bins) is its
    # last; without ``clamp`` every code is its own record
    if not clamp:
        return b
    return b if b < last else last


cdef inline void _fill_columns(const X_BINNED_DTYPE_C* X, Py_ssize_t col_stride,
                               const int* col_of,
                               const unsigned int* rows, const G_H_DTYPE_C* g,
                               const G_H_DTYPE_C* h, Py_ssize_t start, Py_ssize_t stop,
                               const int* features, const int* last, int n_block,
                               hist_struct** out, bint constant, bint clamp) noexcept nogil:
    """The column-major loop: the bin of (row, feature t) is col[t][row]
    (its record: ``_record(bin, last[t])``)."""
    cdef const X_BINNED_DTYPE_C* col[MAX_BLOCK]
    cdef int lim[MAX_BLOCK]
    cdef Py_ssize_t i
    cdef int t
    cdef unsigned int row
    cdef Y_DTYPE_C gi, hi
    cdef hist_struct* bin_
    for t in range(n_block):
        col[t] = X + (col_of[features[t]] if col_of != NULL else features[t]) * col_stride
        lim[t] = last[t]
    for i in range(start, stop):
        row = rows[i] if rows != NULL else <unsigned int>i
        gi = g[row]
        if constant:
            for t in range(n_block):
                bin_ = &out[t][_record(col[t][row], lim[t], clamp)]
                bin_.sum_gradients += gi
                bin_.count += 1
        else:
            hi = h[row]
            for t in range(n_block):
                bin_ = &out[t][_record(col[t][row], lim[t], clamp)]
                bin_.sum_gradients += gi
                bin_.sum_hessians += hi
                bin_.count += 1


cdef inline void _fill_columns_tile(const X_BINNED_DTYPE_C* X, Py_ssize_t col_stride,
                                    const int* col_of,
                                    const unsigned int* rows, const G_H_DTYPE_C* g,
                                    const G_H_DTYPE_C* h, Py_ssize_t start, Py_ssize_t stop,
                                    const int* features, const int* last, int n_block,
                                    hist_struct** out, bint constant,
                                    bint clamp) noexcept nogil:
    """``_fill_columns`` for blocks of at most TILE features: the pointer
    array is small enough for the compiler to keep in registers (measured:
    fits about 10% faster on one thread than with room for MAX_BLOCK)."""
    cdef const X_BINNED_DTYPE_C* col[TILE]
    cdef int lim[TILE]
    cdef Py_ssize_t i
    cdef int t
    cdef unsigned int row
    cdef Y_DTYPE_C gi, hi
    cdef hist_struct* bin_
    for t in range(n_block):
        col[t] = X + (col_of[features[t]] if col_of != NULL else features[t]) * col_stride
        lim[t] = last[t]
    for i in range(start, stop):
        row = rows[i] if rows != NULL else <unsigned int>i
        gi = g[row]
        if constant:
            for t in range(n_block):
                bin_ = &out[t][_record(col[t][row], lim[t], clamp)]
                bin_.sum_gradients += gi
                bin_.count += 1
        else:
            hi = h[row]
            for t in range(n_block):
                bin_ = &out[t][_record(col[t][row], lim[t], clamp)]
                bin_.sum_gradients += gi
                bin_.sum_hessians += hi
                bin_.count += 1


cdef inline void _fill_rows(const X_BINNED_DTYPE_C* X, Py_ssize_t row_stride,
                            const int* row_col, const unsigned int* rows,
                            const G_H_DTYPE_C* g, const G_H_DTYPE_C* h, Py_ssize_t start,
                            Py_ssize_t stop, const int* features, const int* last,
                            int n_block, hist_struct** out, bint constant,
                            bint clamp) noexcept nogil:
    """The row-major loop: the row's bins of the block are xr[offset[t]]
    (columns, last records and outputs copied to locals, which no histogram store can
    alias, so they stay in registers or L1 without reloads)."""
    cdef const X_BINNED_DTYPE_C* xr
    cdef Py_ssize_t i
    cdef int t
    cdef unsigned int row
    cdef Y_DTYPE_C gi, hi
    cdef hist_struct* bin_
    cdef int offset[MAX_BLOCK]
    cdef int lim[MAX_BLOCK]
    cdef hist_struct* dst[MAX_BLOCK]
    for t in range(n_block):
        offset[t] = row_col[features[t]] if row_col != NULL else features[t]
        lim[t] = last[t]
        dst[t] = out[t]
    for i in range(start, stop):
        row = rows[i] if rows != NULL else <unsigned int>i
        xr = X + row * row_stride
        gi = g[row]
        if constant:
            for t in range(n_block):
                bin_ = &dst[t][_record(xr[offset[t]], lim[t], clamp)]
                bin_.sum_gradients += gi
                bin_.count += 1
        else:
            hi = h[row]
            for t in range(n_block):
                bin_ = &dst[t][_record(xr[offset[t]], lim[t], clamp)]
                bin_.sum_gradients += gi
                bin_.sum_hessians += hi
                bin_.count += 1


cdef inline void _chunk_rows(const hist_job* job, Py_ssize_t c, Py_ssize_t* start,
                             Py_ssize_t* stop) noexcept nogil:
    """The positions ``start:stop`` of chunk ``c``'s rows in the node."""
    start[0] = c * job.chunk_len
    stop[0] = start[0] + job.chunk_len
    if stop[0] > job.n:
        stop[0] = job.n
    if start[0] > stop[0]:
        start[0] = stop[0]


cdef void _fill_sparse_chunk(hist_job* job, Py_ssize_t c) noexcept nogil:
    """Chunk ``c``'s sums of every active sparse feature, from its rows'
    entries (the default bins stay zero), and its gradient and hessian
    totals (``chunk_g[c]``, ``chunk_h[c]``), summed in row order."""
    cdef hist_struct* out = job.hist if job.n_chunks == 1 else job.partial + c * job.total
    cdef Py_ssize_t i, j, f, k, start, stop, first, last
    cdef unsigned int row, r
    cdef Y_DTYPE_C gi, hi, sg = 0., sh = 0.
    cdef bint constant = job.hessians_are_constant
    cdef hist_struct* bin_
    _chunk_rows(job, c, &start, &stop)
    for j in range(job.n_active):
        f = job.active[j]
        if job.is_sparse[f]:
            for k in range(job.offsets[f], job.offsets[f + 1]):
                out[k].sum_gradients = 0.
                out[k].sum_hessians = 0.
                out[k].count = 0
    for i in range(start, stop):
        row = job.rows[i] if job.rows != NULL else <unsigned int>i
        gi = job.g[row]
        sg = sg + gi
        hi = 0.
        if not constant:
            hi = job.h[row]
            sh = sh + hi
        first = job.row_ptr[row]
        last = job.row_ptr[row + 1]
        for k in range(first, last):
            r = job.records[k]
            if job.record_on[r]:
                bin_ = &out[r]
                bin_.sum_gradients += gi
                bin_.sum_hessians += hi
                bin_.count += 1
    job.chunk_g[c] = sg
    job.chunk_h[c] = sh


cdef void _run_hist_task(hist_job* job, Py_ssize_t task) noexcept nogil:
    """Task ``task``: the sparse features of chunk ``task`` if it is below
    ``n_sparse_tasks``; else, counting from there, chunk ``task % n_chunks``
    of the rows and block ``task // n_chunks`` of the dense features (its
    own stack arrays, so parallel tasks share nothing but read-only inputs
    and disjoint outputs)."""
    cdef int block_features[MAX_BLOCK]
    cdef hist_struct* block_out[MAX_BLOCK]
    cdef int n_block = 0
    cdef Py_ssize_t c, first, j, f, start, stop
    if task < job.n_sparse_tasks:
        _fill_sparse_chunk(job, task)
        return
    task -= job.n_sparse_tasks
    c = task % job.n_chunks
    first = (task // job.n_chunks) * job.block
    _chunk_rows(job, c, &start, &stop)
    for j in range(first, first + job.block):
        if j < job.n_dense:
            f = job.dense[j]
            block_features[n_block] = <int>f
            if job.n_chunks == 1:
                block_out[n_block] = job.hist + job.offsets[f]
            else:
                block_out[n_block] = job.partial + c * job.total + job.offsets[f]
            n_block += 1
    _fill_block(job, start, stop, block_features, n_block, block_out, job.n_chunks == 1)


cdef void _finish_hist_feature(const hist_job* job, Py_ssize_t i) noexcept nogil:
    """Active feature ``i``'s histogram once its tasks ran: its chunks'
    partials added, and a sparse feature's default bin set."""
    if job.n_chunks > 1:
        _reduce_hist_feature(job, i)
    if job.n_sparse_tasks > 0 and job.is_sparse[job.active[i]]:
        _default_bin(job, job.active[i])


cdef inline bint _needs_finish(const hist_job* job) noexcept nogil:
    """Whether the features need a pass after the tasks (_finish_hist_feature)."""
    return job.n_chunks > 1 or job.n_sparse_tasks > 0


cdef void _default_bin(const hist_job* job, Py_ssize_t f) noexcept nogil:
    """Sparse feature ``f``'s default bin: the node's totals (the chunks'
    sums, added in chunk order) minus its other records. Its count is exact;
    an empty one gets exact zero sums (as a filled one would)."""
    cdef Py_ssize_t k, c, d = job.default_record[f]
    cdef Y_DTYPE_C sg = 0., sh = 0.
    cdef Py_ssize_t cnt = job.n
    cdef hist_struct* hist = job.hist
    for c in range(job.n_chunks):
        sg = sg + job.chunk_g[c]
        sh = sh + job.chunk_h[c]
    for k in range(job.offsets[f], job.offsets[f + 1]):
        if k != d:
            sg = sg - hist[k].sum_gradients
            sh = sh - hist[k].sum_hessians
            cnt = cnt - hist[k].count
    if cnt == 0:
        sg = 0.
        sh = 0.
    hist[d].sum_gradients = sg
    hist[d].sum_hessians = sh
    hist[d].count = <unsigned int>cnt
    if job.hessians_are_constant:  # (as the dense features' final pass)
        for k in range(job.offsets[f], job.offsets[f + 1]):
            hist[k].sum_hessians = hist[k].count * job.h0


cdef void _reduce_hist_feature(const hist_job* job, Py_ssize_t i) noexcept nogil:
    """Active feature ``i``'s histogram: its chunks' partials added in chunk
    order (the same sums for any threads)."""
    cdef Py_ssize_t f = job.active[i], b, c
    cdef Py_ssize_t first = job.offsets[f], n_bins = job.offsets[f + 1] - first
    cdef hist_struct* dst = job.hist + first
    cdef const hist_struct* src
    cdef Y_DTYPE_C sg, sh
    cdef unsigned int cnt
    for b in range(n_bins):
        sg = 0.
        sh = 0.
        cnt = 0
        for c in range(job.n_chunks):
            src = job.partial + c * job.total + first + b
            sg = sg + src.sum_gradients
            sh = sh + src.sum_hessians
            cnt = cnt + src.count
        dst[b].sum_gradients = sg
        dst[b].sum_hessians = cnt * job.h0 if job.hessians_are_constant else sh
        dst[b].count = cnt


cdef inline void _subtract_hist_feature(const hist_struct* parent, const hist_struct* sibling,
                                        hist_struct* out, Py_ssize_t n_bins) noexcept nogil:
    """One feature of ``out = parent - sibling``."""
    cdef Py_ssize_t b
    for b in range(n_bins):
        out[b].sum_gradients = parent[b].sum_gradients - sibling[b].sum_gradients
        out[b].sum_hessians = parent[b].sum_hessians - sibling[b].sum_hessians
        out[b].count = parent[b].count - sibling[b].count
