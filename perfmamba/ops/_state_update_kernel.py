"""The Triton body of `state_update_triton`: one decode step, the state dimension walked in strips of BLOCK_N.

Imported only where Triton is installed. The function below is left undecorated: `state_update_triton` applies
`triton.jit` lazily, once compiled and once interpreted, because Triton decides between the two when the
decorator runs (from $TRITON_INTERPRET), not when the kernel is launched.
"""

import triton.language as tl


def state_update_kernel(
    state_ptr, x_ptr, dt_ptr, dt_bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, out_ptr,
    dim, heads_per_group,
    s_sb, s_sh, s_sm, s_sn,
    x_sb, x_sh, x_sm,
    dt_sb, dt_sh, dt_sm,
    dtb_sh, dtb_sm,
    A_sh, A_sm, A_sn,
    B_sb, B_sg, B_sn,
    C_sb, C_sg, C_sn,
    D_sh, D_sm,
    z_sb, z_sh, z_sm,
    o_sb, o_sh, o_sm,
    DSTATE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, STATE_ALIGN: tl.constexpr,
    PAIRS: tl.constexpr, EVEN_M: tl.constexpr, TIE_HDIM: tl.constexpr, DT_SOFTPLUS: tl.constexpr,
    HAS_DT_BIAS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
):
    # PAIRS: a tile row is two state rows back to back (the host's choice, `pairs_rows`): a pair of N' = 68 takes
    # three strips of 64 where two rows take four, and rows of 232 bytes (bf16 N' = 116) that start off 16-byte
    # boundaries move as 464-byte pairs in 16-byte vectors. Column c of a tile row is column c % N' of state row
    # 2m + c // N'; y is summed per row.
    # Heads on grid axis 1, batch on axis 2: programs launched together walk one contiguous stretch of the (b, h, p, N)
    # state, not the same head of every sequence (0.2-2.7% off the model's step on an H200, session 14).
    pid_m = tl.program_id(0)
    pid_h = tl.program_id(1)
    pid_b = tl.program_id(2)
    pid_g = pid_h // heads_per_group
    RUN: tl.constexpr = DSTATE * (2 if PAIRS else 1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rows = offs_m * 2 if PAIRS else offs_m  # each tile row's first state row
    mask_m = rows < dim

    state_ptr += pid_b * s_sb + pid_h * s_sh
    B_ptr += pid_b * B_sb + pid_g * B_sg
    C_ptr += pid_b * C_sb + pid_g * C_sg
    A_ptr += pid_h * A_sh

    x = tl.load(x_ptr + pid_b * x_sb + pid_h * x_sh + rows * x_sm, mask=mask_m, other=0.0).to(tl.float32)
    if PAIRS:
        x2 = tl.load(x_ptr + pid_b * x_sb + pid_h * x_sh + (rows + 1) * x_sm, mask=mask_m, other=0.0).to(tl.float32)
    if TIE_HDIM:
        # Mamba-2: dt and A are per head (the caller's expanded views have stride 0): scalars, one decay per head.
        dt = tl.load(dt_ptr + pid_b * dt_sb + pid_h * dt_sh).to(tl.float32)
        if HAS_DT_BIAS:
            dt += tl.load(dt_bias_ptr + pid_h * dtb_sh).to(tl.float32)
        if DT_SOFTPLUS:
            # log(1 + e^dt) overflows past ~88; above 20 it equals dt to fp32 precision (mamba-ssm's cut-off).
            dt = tl.where(dt <= 20.0, tl.log(1.0 + tl.exp(dt)), dt)
        dA_head = tl.exp(tl.load(A_ptr).to(tl.float32) * dt)
        dt2 = dt
    else:
        dt = tl.load(dt_ptr + pid_b * dt_sb + pid_h * dt_sh + rows * dt_sm, mask=mask_m, other=0.0).to(tl.float32)
        if HAS_DT_BIAS:
            dt += tl.load(dt_bias_ptr + pid_h * dtb_sh + rows * dtb_sm, mask=mask_m, other=0.0).to(tl.float32)
        if DT_SOFTPLUS:
            dt = tl.where(dt <= 20.0, tl.log(1.0 + tl.exp(dt)), dt)
        if PAIRS:
            dt2 = tl.load(dt_ptr + pid_b * dt_sb + pid_h * dt_sh + (rows + 1) * dt_sm, mask=mask_m,
                          other=0.0).to(tl.float32)
            if HAS_DT_BIAS:
                dt2 += tl.load(dt_bias_ptr + pid_h * dtb_sh + (rows + 1) * dtb_sm, mask=mask_m,
                               other=0.0).to(tl.float32)
            if DT_SOFTPLUS:
                dt2 = tl.where(dt2 <= 20.0, tl.log(1.0 + tl.exp(dt2)), dt2)
    dtx = (x * dt)[:, None]
    if PAIRS:
        dtx2 = (x2 * dt2)[:, None]

    # Row offsets carry their alignment (STATE_ALIGN elements, from the host) so that a pruned N' such as 116
    # still gets vector loads: Triton only infers alignment of 16 from integer arguments by itself.
    offs = tl.multiple_of(rows * s_sm, STATE_ALIGN)
    acc = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc2 = tl.zeros([BLOCK_M], dtype=tl.float32)
    # DSTATE is a compile-time constant, so the loop unrolls and each strip knows whether it is whole: only the
    # last strip of a run that is not a multiple of BLOCK_N is masked along it, and bytes and work follow N'.
    # Strip k + 1 is loaded after strip k is stored (the compiler cannot tell that they do not alias), and B and C
    # reach the tile's layout through shared memory before the state is loaded. Other orders were built and timed
    # on an H200 and lost, or gained nothing in the model's step: the next strip's loads first (session 10), every
    # load of the program first, a loop over rows pipelined through shared memory, and a head's rows taken as one
    # flat run (session 12); so was a masked tail split into unmasked pieces (session 11), and B and C loaded
    # straight into the tile's layout (session 14). No row tiling measured, TMA boxes included, moves a state of
    # 116 columns more than 3% faster than one of 128 (session 14): only flat runs of rows do, and the arithmetic
    # on flat runs cost more than they saved (sessions 12, 14, 16); a state stored channels-contiguous, whose tile
    # rows are whole lines at any N', was 13-17% slower at 128 and 1.5-3.6% faster at 116 (session 16).
    # The x, dt, z and output offsets are computed at each use: hoisted, they reordered the compiled code and
    # cost 3% at 1.3b N' = 88.
    # docs/results/state_update.md has the numbers.
    for n0 in tl.static_range(0, RUN, BLOCK_N):
        offs_c = n0 + tl.arange(0, BLOCK_N)
        # Which row of a pair each column is in. The conditions are written out at each use: a name assigned in
        # the loop would be a runtime value, and a strip wholly in one row needs no select.
        second = offs_c >= DSTATE
        if not PAIRS or n0 + BLOCK_N <= DSTATE:
            offs_n, A_rows, dtx_n, dt_n = offs_c, rows[:, None], dtx, dt
        elif n0 >= DSTATE:
            offs_n, A_rows, dtx_n, dt_n = offs_c - DSTATE, rows[:, None] + 1, dtx2, dt2
        else:
            offs_n = tl.where(second, offs_c - DSTATE, offs_c)
            A_rows = rows[:, None] + second[None, :].to(tl.int32)
            dtx_n = tl.where(second[None, :], dtx2, dtx)
            dt_n = dt if TIE_HDIM else tl.where(second[None, :], dt2[:, None], dt[:, None])
        ptrs = state_ptr + offs[:, None] + offs_c[None, :] * s_sn
        A_ptrs = A_ptr + A_rows * A_sm + offs_n[None, :] * A_sn
        if n0 + BLOCK_N <= RUN:
            B = tl.load(B_ptr + offs_n * B_sn).to(tl.float32)
            C = tl.load(C_ptr + offs_n * C_sn).to(tl.float32)
            if EVEN_M:  # Triton refuses `other` without a mask, hence a load of each kind
                mask = None
                s = tl.load(ptrs).to(tl.float32)
                if not TIE_HDIM:
                    A = tl.load(A_ptrs)
            else:
                mask = mask_m[:, None]
                s = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
                if not TIE_HDIM:
                    A = tl.load(A_ptrs, mask=mask, other=0.0)
        else:
            mask_n = offs_c < RUN
            mask = mask_m[:, None] & mask_n[None, :]
            B = tl.load(B_ptr + offs_n * B_sn, mask=mask_n, other=0.0).to(tl.float32)
            C = tl.load(C_ptr + offs_n * C_sn, mask=mask_n, other=0.0).to(tl.float32)
            s = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
            if not TIE_HDIM:
                A = tl.load(A_ptrs, mask=mask, other=0.0)
        if TIE_HDIM:
            dA = dA_head
        elif not PAIRS or n0 + BLOCK_N <= DSTATE or n0 >= DSTATE:
            dA = tl.exp(A.to(tl.float32) * dt_n[:, None])
        else:
            dA = tl.exp(A.to(tl.float32) * dt_n)
        s = s * dA + B[None, :] * dtx_n
        tl.store(ptrs, s.to(state_ptr.dtype.element_ty), mask=mask)
        # y from the fp32 state, before it is rounded to the cache's dtype (as mamba-ssm's kernel does)
        y = s * C[None, :]
        if not PAIRS or n0 + BLOCK_N <= DSTATE:
            acc += tl.sum(y, axis=1)
        elif n0 >= DSTATE:
            acc2 += tl.sum(y, axis=1)
        else:
            acc += tl.sum(tl.where(second[None, :], 0.0, y), axis=1)
            acc2 += tl.sum(tl.where(second[None, :], y, 0.0), axis=1)

    if HAS_D:
        acc += x * tl.load(D_ptr + pid_h * D_sh + rows * D_sm, mask=mask_m, other=0.0).to(tl.float32)
    if HAS_Z:
        z = tl.load(z_ptr + pid_b * z_sb + pid_h * z_sh + rows * z_sm, mask=mask_m, other=0.0).to(tl.float32)
        acc *= z * tl.sigmoid(z)
    tl.store(out_ptr + pid_b * o_sb + pid_h * o_sh + rows * o_sm, acc.to(out_ptr.dtype.element_ty), mask=mask_m)
    if PAIRS:
        if HAS_D:
            acc2 += x2 * tl.load(D_ptr + pid_h * D_sh + (rows + 1) * D_sm, mask=mask_m, other=0.0).to(tl.float32)
        if HAS_Z:
            z2 = tl.load(z_ptr + pid_b * z_sb + pid_h * z_sh + (rows + 1) * z_sm, mask=mask_m, other=0.0)
            acc2 *= z2.to(tl.float32) * tl.sigmoid(z2.to(tl.float32))
        tl.store(out_ptr + pid_b * o_sb + pid_h * o_sh + (rows + 1) * o_sm, acc2.to(out_ptr.dtype.element_ty),
                 mask=mask_m)
