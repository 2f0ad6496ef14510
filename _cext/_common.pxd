# Shared C types of the compiled kernels. The numpy dtypes that mirror the
# packed structs live in dartboost/_common.py; keep the two in sync.

ctypedef double X_DTYPE_C             # raw feature values
ctypedef unsigned char X_BINNED_DTYPE_C  # binned feature values (<= 255 bins + missing)
ctypedef double Y_DTYPE_C             # targets, raw scores, histogram sums
ctypedef float G_H_DTYPE_C            # gradients and hessians (float32 halves memory traffic)

cdef packed struct hist_struct:
    # One histogram bin. Sums are float64 so that adding millions of float32
    # gradients does not lose precision.
    Y_DTYPE_C sum_gradients
    Y_DTYPE_C sum_hessians
    unsigned int count

cdef packed struct node_struct:
    # One tree node. Children are indices into the same tree's node array.
    Y_DTYPE_C value
    unsigned int count
    int feature_idx
    X_DTYPE_C num_threshold
    unsigned char missing_go_to_left
    unsigned int left
    unsigned int right
    Y_DTYPE_C gain
    unsigned int depth
    unsigned char is_leaf
    X_BINNED_DTYPE_C bin_threshold
    Y_DTYPE_C sum_hessians
