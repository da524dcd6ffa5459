"""winlab: the embedded lab, a WS-Management server on loopback that emulates Windows hosts."""
