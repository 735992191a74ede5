"""Porting by copy: what lets the original scripts' files run unchanged under `xval`.

source.py reads an old experiment file without its driver block and old imports; config.py maps an
old config.ini onto today's sections and keys. Old-style models modules are adapted in
xvalkit/models/legacy.py, old pickled-dict datasets converted by xvalkit/convert.py.
"""
