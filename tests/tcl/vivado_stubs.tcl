# Recording stand-ins for the Vivado Tcl commands our overlay scripts use, so they run under plain tclsh.
#
# Every call is echoed as Vivado's batch mode does ("# cmd args") and appended to $::stub::log as one JSON
# line {"cmd": NAME, "args": [...]}. Queries return
# plausible objects (names), configured by the test through these variables, set before sourcing a script:
#   ::stub::log          path of the JSON-lines log (required)
#   ::stub::ipdefs       kernel names present in the IP catalog
#   ::stub::masters      dict: kernel name -> list of its m_axi bundle names
#   ::stub::board_files  1 when the PYNQ-Z2 board files are "installed"
#   ::stub::run_status   STATUS of impl_1 after wait_on_run
#   ::stub::samples      folder with sample utilization.rpt / timing_summary.rpt the report_* commands copy
# launch_runs writes a fake bitstream and .hwh where Vivado would, so the copy step of run_vivado.tcl runs.

namespace eval ::stub {
    variable ipdefs {}
    variable masters {}
    variable board_files 1
    variable run_status "write_bitstream Complete!"
    variable project_dir ""
    variable project_name ""
    variable cells {}
    variable samples ""
}

proc ::stub::json_str {s} {
    set map [list \\ \\\\ \" \\\" \n \\n \r \\r \t \\t]
    return "\"[string map $map $s]\""
}

proc ::stub::record {cmd arglist} {
    puts "# $cmd $arglist"
    set items {}
    foreach a $arglist { lappend items [::stub::json_str $a] }
    set fh [open $::stub::log a]
    puts $fh "{\"cmd\": [::stub::json_str $cmd], \"args\": \[[join $items {, }]\]}"
    close $fh
}

# Value of option `name` in an argument list, or "" when absent.
proc ::stub::opt {arglist name} {
    set i [lsearch -exact $arglist $name]
    if {$i < 0} { return "" }
    return [lindex $arglist [expr {$i + 1}]]
}

proc ::stub::kernel_of {cell} {
    return [dict get $::stub::cells $cell]
}

foreach cmd {
    apply_bd_automation connect_bd_net connect_bd_intf_net current_bd_design create_bd_design set_property
    validate_bd_design save_bd_design update_ip_catalog generate_target add_files update_compile_order
    open_run assign_bd_address
} {
    proc $cmd {args} [format {::stub::record %s $args; return ""} $cmd]
}

proc create_project {args} {
    ::stub::record create_project $args
    set pos [lsearch -all -inline -not -glob $args -*]
    set ::stub::project_name [lindex $pos 0]
    set ::stub::project_dir [lindex $pos 1]
    file mkdir $::stub::project_dir
    return $::stub::project_name
}

proc current_project {args} { ::stub::record current_project $args; return $::stub::project_name }
proc current_fileset {args} { ::stub::record current_fileset $args; return sources_1 }

proc get_board_parts {args} {
    ::stub::record get_board_parts $args
    if {$::stub::board_files} { return [lindex $args end] }
    return ""
}

proc get_ipdefs {args} {
    ::stub::record get_ipdefs $args
    regexp {NAME == (\S+)} [::stub::opt $args -filter] -> name
    if {[lsearch -exact $::stub::ipdefs $name] >= 0} { return [list xilinx.com:hls:$name:1.0] }
    return ""
}

proc create_bd_cell {args} {
    ::stub::record create_bd_cell $args
    set name [lindex $args end]
    set vlnv [::stub::opt $args -vlnv]
    if {[dict exists $::stub::cells $name]} { error "create_bd_cell: cell $name exists" }
    dict set ::stub::cells $name [lindex [split $vlnv :] 2]
    return $name
}

proc get_bd_cells {args} { ::stub::record get_bd_cells $args; return [lindex $args end] }
proc get_bd_pins {args} { ::stub::record get_bd_pins $args; return [lindex $args end] }
proc get_bd_addr_segs {args} { ::stub::record get_bd_addr_segs $args; return [lindex $args end] }

proc get_bd_intf_pins {args} {
    ::stub::record get_bd_intf_pins $args
    set cell [::stub::opt $args -of_objects]
    if {$cell eq ""} { return [lindex $args end] }
    if {[::stub::opt $args -filter] ne "MODE == Master"} { error "get_bd_intf_pins: unexpected filter in $args" }
    set kernel [::stub::kernel_of $cell]
    return [lmap b [dict get $::stub::masters $kernel] {string cat $cell/m_axi_$b}]
}

proc get_bd_addr_spaces {args} {
    ::stub::record get_bd_addr_spaces $args
    set cell [::stub::opt $args -of_objects]
    if {$cell eq ""} { return [lindex $args end] }
    set kernel [::stub::kernel_of $cell]
    return [lmap b [dict get $::stub::masters $kernel] {string cat $cell/Data_m_axi_$b}]
}

proc get_files {args} {
    ::stub::record get_files $args
    set f [lindex $args end]
    set d [file rootname $f]
    return [file join $::stub::project_dir $::stub::project_name.srcs sources_1 bd $d $f]
}

proc make_wrapper {args} {
    ::stub::record make_wrapper $args
    set bd [file rootname [file tail [::stub::opt $args -files]]]
    return [file join $::stub::project_dir $::stub::project_name.gen sources_1 bd $bd hdl ${bd}_wrapper.v]
}

proc get_runs {args} { ::stub::record get_runs $args; return [lindex $args end] }

proc launch_runs {args} {
    ::stub::record launch_runs $args
    set n $::stub::project_name
    set run_dir [file join $::stub::project_dir $n.runs impl_1]
    file mkdir $run_dir
    set fh [open [file join $run_dir ${n}_wrapper.bit] w]; puts $fh "bitstream of $n"; close $fh
    set hh [file join $::stub::project_dir $n.gen sources_1 bd $n hw_handoff]
    file mkdir $hh
    set fh [open [file join $hh $n.hwh] w]; puts $fh "<MODULES hwh of $n/>"; close $fh
    return ""
}

proc get_property {args} {
    ::stub::record get_property $args
    switch -- [lindex $args 0] {
        STATUS { return $::stub::run_status }
        DIRECTORY { return [file join $::stub::project_dir $::stub::project_name.runs impl_1] }
    }
    error "get_property: no stub for [lindex $args 0]"
}

foreach {cmd sample} {report_utilization utilization.rpt report_timing_summary timing_summary.rpt} {
    proc $cmd {args} [format {
        ::stub::record %s $args
        if {$::stub::samples ne ""} { file copy -force [file join $::stub::samples %s] [::stub::opt $args -file] }
        return ""
    } $cmd $sample]
}

proc wait_on_run {args} {
    ::stub::record wait_on_run $args
    puts "\[[clock format [clock seconds]]\] [lindex $args end] finished"
}
