"""The course kit: a student version of the notebooks and of the package, without the answers.

    python -m lvae_np.course release DIR [--assignments-only | --assignment NN ...]

writes the assignments' and tutorials' notebooks through nbgrader's solution
clearing, a copy of lvae_np whose assigned functions are stubs, the data and
published runs the released notebooks read (so the release runs offline) and
an ``nbgrader_config.py`` (see ``release``); ``markers`` finds and cuts the
solution regions, ``folders`` keeps a release out of the source tree and lets
``--force`` replace only an earlier release. nbgrader is an optional extra
(``pip install -e .[course]``), never a dependency of lvae_np. The autograder
the students and instructors run is ``lvae_np.gradcheck.grade``.
"""
