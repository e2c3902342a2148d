"""The course kit: a student version of the notebooks and of the package, without the answers.

    python -m lvae_np.course release --out DIR

writes the assignments' and tutorials' notebooks through nbgrader's solution
clearing and a copy of lvae_np whose assigned functions are stubs (see
``release``); ``markers`` finds and cuts the solution regions. nbgrader is an
optional extra (``pip install -e .[course]``), never a dependency of lvae_np.
The autograder the students and instructors run is ``lvae_np.gradcheck.grade``.
"""
