"""Bench input: SIZE_MB of 10 MB files in ROOT, 2/3 compressible text and
1/3 random bytes (seeded words, so the text is the same every run).
Usage: python3 tests/bench/make-input.py ROOT SIZE_MB"""
import os, sys, random
root, mb = sys.argv[1], int(sys.argv[2])
os.makedirs(root, exist_ok=True)
rnd = random.Random(7)
words = [''.join(rnd.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(rnd.randint(2, 9))) for _ in range(5000)]
for i in range(max(1, mb // 10)):
    path = os.path.join(root, f"f{i:04}")
    with open(path, "wb") as f:
        if i % 3 == 2:
            f.write(os.urandom(10 << 20))
        else:
            n = 0
            while n < (10 << 20):
                line = (' '.join(rnd.choice(words) for _ in range(12)) + '\n').encode()
                f.write(line)
                n += len(line)
