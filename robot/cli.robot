*** Settings ***
Documentation     ``crewline run CREW.yaml --json`` on a crew file the suite writes, pointing at
...               the fake server (a separate process): the usage the command prints is the
...               server's own count, per task and in total, also when a budget stops the run.
Resource          crewline.resource
Library           OperatingSystem
Library           Process
Test Setup        Start Server And Write The Crew File
Test Teardown     Stop Server And Remove The Crew File


*** Variables ***
${IN}             0.000001
${OUT}            0.000002
# The research request reserves about $0.00014 and costs about $0.00005; the long write
# request then reserves about $0.00024, more than is left: the budget stops the run there.
${BUDGET}         0.0002


*** Test Cases ***
The JSON Usage Of A Run Equals What The Server Served
    ${result}=    Run Crewline    run    ${CREW FILE}    --json    --input    topic=octopuses
    Should Be Equal As Integers    ${result.rc}    0    msg=${result.stderr}
    ${doc}=    Evaluate    json.loads($result.stdout)    modules=json
    Should Be True    ${doc}[ok]
    ${served}=    Server Totals
    Should Be Equal As Integers    ${served}[requests]    2
    Usage Should Equal Served    ${doc}[usage]    ${served}    the run
    FOR    ${task}    IN    @{doc}[tasks]
        ${mine}=    Server Totals    cli-${task}[name]
        Usage Should Equal Served    ${task}[usage]    ${mine}    task ${task}[name]
    END
    ${cost}=    Served Cost    ${served}    ${IN}    ${OUT}
    Amounts Should Be Equal    ${doc}[usage][cost]    ${cost}
    ${writer}=    Server Totals    cli-write
    Usage Should Equal Served    ${doc}[usage_by_agent][Writer]    ${writer}    the Writer

A Run Stopped By Its Budget Still Reports Exactly What It Spent
    ${result}=    Run Crewline    run    ${CREW FILE}    --json    --input    topic=octopuses
    ...    --budget-usd    ${BUDGET}
    Should Be Equal As Integers    ${result.rc}    1    msg=${result.stdout} ${result.stderr}
    ${doc}=    Evaluate    json.loads($result.stdout)    modules=json
    Should Not Be True    ${doc}[ok]
    Should Contain    ${doc}[error]    budget 'cli' exceeded
    ${served}=    Server Totals
    Should Be Equal As Integers    ${served}[requests]    1    msg=the first request fits, the second does not
    Usage Should Equal Served    ${doc}[usage]    ${served}    the stopped run
    ${cost}=    Served Cost    ${served}    ${IN}    ${OUT}
    Amounts Should Be Equal    ${doc}[usage][cost]    ${cost}
    Amount Should Be At Most    ${cost}    ${BUDGET}

A Missing Input Is One Line On Stderr, Exit 2, And Nothing Is Sent
    ${result}=    Run Crewline    run    ${CREW FILE}    --json
    Should Be Equal As Integers    ${result.rc}    2
    Should Start With    ${result.stderr}    crewline: error:
    Should Contain    ${result.stderr}    topic
    Should Not Contain    ${result.stderr}    Traceback
    ${served}=    Server Totals
    Should Be Equal As Integers    ${served}[requests]    0


*** Keywords ***
Start Server And Write The Crew File
    ${url}=    Start Fake Server
    ${dir}=    Evaluate    tempfile.mkdtemp(prefix="crewline-cli-")    modules=tempfile
    ${details}=    Evaluate    "Mind every detail. " * 33
    Set Test Variable    ${DIR}    ${dir}
    ${yaml}=    Catenate    SEPARATOR=\n
    ...    name: robot-research
    ...    llm:
    ...    ${SPACE}${SPACE}model: openai/custom-model
    ...    ${SPACE}${SPACE}base_url: ${url}
    ...    ${SPACE}${SPACE}api_key: sk-test
    ...    ${SPACE}${SPACE}max_tokens: 20
    ...    ${SPACE}${SPACE}input_cost_per_token: "${IN}"
    ...    ${SPACE}${SPACE}output_cost_per_token: "${OUT}"
    ...    agents:
    ...    ${SPACE}${SPACE}researcher:
    ...    ${SPACE}${SPACE}${SPACE}${SPACE}role: Researcher
    ...    ${SPACE}${SPACE}${SPACE}${SPACE}goal: Find facts about {topic}
    ...    ${SPACE}${SPACE}${SPACE}${SPACE}tools: [crewline.examples.tools:lookup]
    ...    ${SPACE}${SPACE}writer:
    ...    ${SPACE}${SPACE}${SPACE}${SPACE}role: Writer
    ...    ${SPACE}${SPACE}${SPACE}${SPACE}goal: Explain {topic} plainly
    ...    tasks:
    ...    ${SPACE}${SPACE}research:
    ...    ${SPACE}${SPACE}${SPACE}${SPACE}description: "[[cli-research]] Collect three facts about {topic}."
    ...    ${SPACE}${SPACE}${SPACE}${SPACE}expected_output: three facts
    ...    ${SPACE}${SPACE}${SPACE}${SPACE}agent: researcher
    ...    ${SPACE}${SPACE}write:
    ...    ${SPACE}${SPACE}${SPACE}${SPACE}description: "[[cli-write]] Write one paragraph about {topic} from the research. ${details}"
    ...    ${SPACE}${SPACE}${SPACE}${SPACE}agent: writer
    ...    ${SPACE}${SPACE}${SPACE}${SPACE}context: [research]
    Create File    ${dir}${/}crew.yaml    ${yaml}\n
    Set Test Variable    ${CREW FILE}    ${dir}${/}crew.yaml

Stop Server And Remove The Crew File
    Stop Fake Server
    Remove Directory    ${DIR}    recursive=True

Run Crewline
    [Arguments]    @{args}
    ${python}=    Python Executable
    ${result}=    Run Process    ${python}    -m    crewline._surface.cli    @{args}
    ...    cwd=${DIR}    timeout=90s    on_timeout=kill    env:LITELLM_LOCAL_MODEL_COST_MAP=True
    RETURN    ${result}
