-- expect: tests/spec_fail/error_with_table.lua:2: error raised with an empty table as its message (error() takes a string)
error({})
