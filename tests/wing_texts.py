"""A query and four candidates of mixed length (one padded row in every batch), shared
by the tests that compare two ways of computing the same scores."""

QUERY = "how does a swept wing behave at transonic speed"
TEXTS = [
    "swept wings delay the drag rise at transonic mach numbers.",
    "the boundary layer on a flat plate with heat transfer, measured in a wind tunnel "
    "at several mach numbers and wall temperatures, with a comparison to theory.",
    "cats.",
    "buckling of thin cylindrical shells under axial compression and internal pressure.",
]
