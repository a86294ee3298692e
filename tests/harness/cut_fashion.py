#!/usr/bin/env python3
"""Fashion-MNIST cut down for the emulated CUDA runs (emulated evaluation is the slow part).

  cut_fashion.py DIR N_TRAIN N_TEST    DIR/{train,t10k}-{images-idx3,labels-idx1}-ubyte: the
                                       first N_TRAIN training and N_TEST test samples of
                                       /usr/share/datasets/fashion-mnist, uncompressed
"""
import gzip, struct, sys

src, dst = '/usr/share/datasets/fashion-mnist/', sys.argv[1] + '/'
n_train, n_test = int(sys.argv[2]), int(sys.argv[3])
for name, n in [('train-images-idx3-ubyte', n_train), ('train-labels-idx1-ubyte', n_train),
                ('t10k-images-idx3-ubyte', n_test), ('t10k-labels-idx1-ubyte', n_test)]:
    b = gzip.open(src + name + '.gz').read()
    magic = struct.unpack('>I', b[:4])[0]
    nd = magic & 0xff
    dims = list(struct.unpack('>' + 'I' * nd, b[4:4 + 4 * nd]))
    per = 1
    for d in dims[1:]: per *= d
    dims[0] = n
    with open(dst + name, 'wb') as f:
        f.write(struct.pack('>I', magic) + struct.pack('>' + 'I' * nd, *dims) + b[4 + 4 * nd:4 + 4 * nd + n * per])
