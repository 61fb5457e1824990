"""One module per chapter: reference implementations and the checks that grade against them."""
