module godotenv-oracle

go 1.19

require github.com/joho/godotenv v1.5.1

// A checkout of github.com/joho/godotenv at tag v1.5.1 (see ../README.md); not committed.
replace github.com/joho/godotenv => ./godotenv
