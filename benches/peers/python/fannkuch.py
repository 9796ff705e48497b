"""fannkuch-redux n = 10 (checksum 73196, max flips 38); same algorithm as
benches/programs/fannkuch.kasm."""

import bench


def run(n):
    perm = [0] * n
    perm1 = list(range(n))
    count = [0] * n
    r = n
    perm_count = 0
    max_flips = 0
    checksum = 0
    while True:
        while r != 1:
            count[r - 1] = r
            r -= 1
        perm[:] = perm1
        flips = 0
        k = perm[0]
        while k != 0:
            k2 = (k + 1) >> 1
            for i in range(k2):
                t = perm[i]
                perm[i] = perm[k - i]
                perm[k - i] = t
            flips += 1
            k = perm[0]
        if flips > max_flips:
            max_flips = flips
        checksum += flips if perm_count & 1 == 0 else -flips
        while True:
            if r == n:
                return f"{checksum}\nPfannkuchen({n}) = {max_flips}\n"
            perm0 = perm1[0]
            for i in range(r):
                perm1[i] = perm1[i + 1]
            perm1[r] = perm0
            count[r] -= 1
            if count[r] > 0:
                break
            r += 1
        perm_count += 1


bench.main(10, run)
