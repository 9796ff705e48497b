"""Sieve of Eratosthenes below 10,000,000; same algorithm as benches/programs/sieve.kasm.

The marking is an explicit loop, like in every other runtime (not a slice
assignment, which would move the inner loop into C).
"""

import bench


def count_primes(n):
    composite = bytearray(n)
    count = 0
    for i in range(2, n):
        if composite[i]:
            continue
        count += 1
        if i * i < n:
            j = i * i
            while j < n:
                composite[j] = 1
                j += i
    return count


bench.main(10_000_000, lambda n: f"{count_primes(n)}\n")
