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
    EVEN_M: tl.constexpr, TIE_HDIM: tl.constexpr, DT_SOFTPLUS: tl.constexpr, HAS_DT_BIAS: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_b = tl.program_id(1)
    pid_h = tl.program_id(2)
    pid_g = pid_h // heads_per_group
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < dim

    state_ptr += pid_b * s_sb + pid_h * s_sh
    B_ptr += pid_b * B_sb + pid_g * B_sg
    C_ptr += pid_b * C_sb + pid_g * C_sg
    A_ptr += pid_h * A_sh

    x = tl.load(x_ptr + pid_b * x_sb + pid_h * x_sh + offs_m * x_sm, mask=mask_m, other=0.0).to(tl.float32)
    if TIE_HDIM:
        # Mamba-2: dt and A are per head (the caller's expanded views have stride 0): scalars, one decay per head.
        dt = tl.load(dt_ptr + pid_b * dt_sb + pid_h * dt_sh).to(tl.float32)
        if HAS_DT_BIAS:
            dt += tl.load(dt_bias_ptr + pid_h * dtb_sh).to(tl.float32)
        if DT_SOFTPLUS:
            # log(1 + e^dt) overflows past ~88; above 20 it equals dt to fp32 precision (mamba-ssm's cut-off).
            dt = tl.where(dt <= 20.0, tl.log(1.0 + tl.exp(dt)), dt)
        dA_head = tl.exp(tl.load(A_ptr).to(tl.float32) * dt)
    else:
        dt = tl.load(dt_ptr + pid_b * dt_sb + pid_h * dt_sh + offs_m * dt_sm, mask=mask_m, other=0.0).to(tl.float32)
        if HAS_DT_BIAS:
            dt += tl.load(dt_bias_ptr + pid_h * dtb_sh + offs_m * dtb_sm, mask=mask_m, other=0.0).to(tl.float32)
        if DT_SOFTPLUS:
            dt = tl.where(dt <= 20.0, tl.log(1.0 + tl.exp(dt)), dt)
    dtx = (x * dt)[:, None]

    # Row offsets carry their alignment (STATE_ALIGN elements, from the host) so that a pruned N' such as 116
    # still gets vector loads: Triton only infers alignment of 16 from integer arguments by itself.
    rows = tl.multiple_of(offs_m * s_sm, STATE_ALIGN)
    acc = tl.zeros([BLOCK_M], dtype=tl.float32)
    # DSTATE is a compile-time constant, so the loop unrolls and each strip knows whether it is whole: only the
    # last strip of an N' that is not a multiple of BLOCK_N is masked along N, and bytes and work follow N'.
    # Strip k + 1 is loaded after strip k is stored (the compiler cannot tell that they do not alias), and B and C
    # reach the tile's layout through shared memory before the state is loaded. Other orders were built and timed
    # on an H200 and lost, or gained nothing in the model's step: the next strip's loads first (session 10), every
    # load of the program first, a loop over rows pipelined through shared memory, and a head's rows taken as one
    # flat run (session 12); so was a masked tail split into unmasked pieces (session 11).
    # docs/results/state_update.md has the numbers.
    for n0 in tl.static_range(0, DSTATE, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        ptrs = state_ptr + rows[:, None] + offs_n[None, :] * s_sn
        A_ptrs = A_ptr + offs_m[:, None] * A_sm + offs_n[None, :] * A_sn
        if n0 + BLOCK_N <= DSTATE:
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
            mask_n = offs_n < DSTATE
            mask = mask_m[:, None] & mask_n[None, :]
            B = tl.load(B_ptr + offs_n * B_sn, mask=mask_n, other=0.0).to(tl.float32)
            C = tl.load(C_ptr + offs_n * C_sn, mask=mask_n, other=0.0).to(tl.float32)
            s = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
            if not TIE_HDIM:
                A = tl.load(A_ptrs, mask=mask, other=0.0)
        if TIE_HDIM:
            dA = dA_head
        else:
            dA = tl.exp(A.to(tl.float32) * dt[:, None])
        s = s * dA + B[None, :] * dtx
        tl.store(ptrs, s.to(state_ptr.dtype.element_ty), mask=mask)
        # y from the fp32 state, before it is rounded to the cache's dtype (as mamba-ssm's kernel does)
        acc += tl.sum(s * C[None, :], axis=1)

    if HAS_D:
        acc += x * tl.load(D_ptr + pid_h * D_sh + offs_m * D_sm, mask=mask_m, other=0.0).to(tl.float32)
    if HAS_Z:
        z = tl.load(z_ptr + pid_b * z_sb + pid_h * z_sh + offs_m * z_sm, mask=mask_m, other=0.0).to(tl.float32)
        acc *= z * tl.sigmoid(z)
    tl.store(out_ptr + pid_b * o_sb + pid_h * o_sh + offs_m * o_sm, acc.to(out_ptr.dtype.element_ty), mask=mask_m)
